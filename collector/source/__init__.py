"""The stream source: X's filtered stream in, complete lines out, and every other X call.

Nothing here touches the disk: what arrives goes to the spool writer. One module a concern:
    stream       the filtered (or sample) stream through tweepy: a batch of complete lines per
                 network read, X's refusals classified
    rules        the stream's rules: list them, make the live rules equal to the config (dry runs)
    access       X's access levels and what each allows (rule count and length)
    account      X's account-level refusals of the stream: what each means, when to try again
    budget       pause at the budget, reopen when the day or the billing cycle renews it
    connections  X's Connections API: list the app's stream connections, end stale ones
    estimate     `collector rules estimate`: what the rules would cost, from X's post counts
    fields       what the collector asks X to send with each post: the capture profiles
    pricing      X's pay-per-use prices and caps, one definition each
    repair       gap repair: the posts X matched while the stream was down, fetched by search
    usage        what X says the project used and holds (/2/usage/tweets, /2/usage/credits)
"""
