-- Posts per matching rule tag (a post matching two rules counts for both). Athena and DuckDB.
SELECT coalesce(rule_tag, '(untagged)') AS rule_tag, count(*) AS posts
FROM posts
CROSS JOIN UNNEST(matching_rules) AS t (rule_tag)
GROUP BY 1
ORDER BY 2 DESC, 1
