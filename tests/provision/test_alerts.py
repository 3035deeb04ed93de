"""Alerts: provision.yml with alerts_email makes an SNS topic, its e-mail subscription, the
CloudWatch alarms and S3's request metrics on the collector's prefix; re-runs change nothing;
teardown removes them, twice without a change.

The playbooks sign as the administrator of a moto that enforces IAM (as on AWS), so the collector's
key the iam role stored can be tried against what the alarms rest on."""

from __future__ import annotations

import json

import boto3
import botocore.exceptions
import pytest
import yaml

from tests.conftest import IamMoto, enforcing_moto_server
from tests.provision.test_provision import BUCKET, Runner, recap

# Every test here reads a footprint built by three ansible-playbook runs against moto.
pytestmark = pytest.mark.slow

EMAIL = "ops@example.org"
PREFIX = "twittersnake"  # twittersnake_project in the sandbox inventory
COLLECTOR_ID = "sandbox-collector"  # collector_id in the sandbox inventory
KEY_PREFIX = "raw/"  # twittersnake_prefix in the sandbox inventory, as S3 keys start
METRICS_ID = f"{PREFIX}-collector"  # the bucket metrics configuration, AWS/S3's FilterId


@pytest.fixture(scope="module")
def alerted(tmp_path_factory):
    """provision with alerts_email: fresh, again, --check, on its own moto that enforces IAM."""
    server = enforcing_moto_server()
    server.start()
    try:
        admin = IamMoto(server).reset()
        runner = Runner(server.url, tmp_path_factory.mktemp("alerts"), key=admin)
        email = ["-e", f"alerts_email={EMAIL}"]
        runs = [runner.run("provision", *email, *args) for args in ([], [], ["--check"])]
        yield runner, runs
    finally:
        server.stop()


def alarms(runner: Runner) -> dict[str, dict]:
    found = runner.client("cloudwatch").describe_alarms(AlarmNamePrefix=PREFIX)["MetricAlarms"]
    return {alarm["AlarmName"]: alarm for alarm in found}


def topic_arn(runner: Runner) -> str | None:
    topics = runner.client("sns").list_topics()["Topics"]
    arns = [t["TopicArn"] for t in topics if t["TopicArn"].endswith(f":{PREFIX}-alerts")]
    return arns[0] if arns else None


def test_a_rerun_with_alerts_changes_nothing(alerted):
    _, runs = alerted
    assert recap(runs[0].stdout)["changed"] > 0
    assert recap(runs[1].stdout)["changed"] == 0, runs[1].stdout[-3000:]
    assert recap(runs[2].stdout)["changed"] == 0, runs[2].stdout[-3000:]


def test_the_topic_mails_alerts_email(alerted):
    runner, _ = alerted
    arn = topic_arn(runner)
    assert arn
    subscriptions = runner.client("sns").list_subscriptions_by_topic(TopicArn=arn)["Subscriptions"]
    assert [(s["Protocol"], s["Endpoint"]) for s in subscriptions] == [("email", EMAIL)]


def test_only_cloudwatch_alarms_publish_and_only_the_account_manages_the_topic(alerted):
    """SNS's default policy lets any principal of the account publish; ours names CloudWatch
    (this account's alarms, against the confused deputy) and nobody else."""
    runner, _ = alerted
    arn = topic_arn(runner)
    account = arn.split(":")[4]
    attributes = runner.client("sns").get_topic_attributes(TopicArn=arn)["Attributes"]
    statements = {s["Sid"]: s for s in json.loads(attributes["Policy"])["Statement"]}
    assert set(statements) == {"CloudWatchAlarmsPublish", "AccountManages"}
    publish = statements["CloudWatchAlarmsPublish"]
    assert publish["Principal"] == {"Service": "cloudwatch.amazonaws.com"}
    assert publish["Action"] == "sns:Publish" and publish["Resource"] == arn
    assert publish["Condition"] == {
        "ArnLike": {"aws:SourceArn": f"arn:aws:cloudwatch:us-east-1:{account}:alarm:{PREFIX}-*"},
        "StringEquals": {"aws:SourceAccount": account},
    }
    manage = statements["AccountManages"]
    assert manage["Principal"] == {"AWS": f"arn:aws:iam::{account}:root"}
    assert "sns:Publish" not in manage["Action"] and manage["Resource"] == arn
    assert all(s["Effect"] == "Allow" for s in statements.values())
    assert all(s["Principal"] not in ("*", {"AWS": "*"}) for s in statements.values())


def test_each_alarm_has_its_threshold_and_notifies_on_alarm_and_ok(alerted):
    runner, _ = alerted
    arn = topic_arn(runner)
    found = alarms(runner)
    assert set(found) == {
        f"{PREFIX}-{name}"
        for name in (
            "no-posts",
            "no-uploads",
            "uploads-stuck",
            "unhealthy",
            "disk-low",
            "budget-paused",
            "compliance-failed",
            "compliance-overdue",
            "system-check",
            "instance-check",
        )
    }
    for alarm in found.values():
        assert arn in alarm["AlarmActions"] and alarm["OKActions"] == [arn], alarm["AlarmName"]
        assert alarm["Period"] == 60

    def shape(name: str) -> tuple:
        a = found[f"{PREFIX}-{name}"]
        dims = {d["Name"]: d["Value"] for d in a["Dimensions"]}
        return (
            a["Namespace"],
            a["MetricName"],
            dims,
            a["Statistic"],
            a["ComparisonOperator"],
            a["Threshold"],
            a["EvaluationPeriods"],
            a.get("TreatMissingData", "missing"),
        )

    cid = {"CollectorId": COLLECTOR_ID}
    # the role's defaults: 30 min without posts, 8 min old pending file, 8 min unhealthy,
    # under 10 % free for 5 min; 2 / 3 min of failed EC2 status checks
    assert shape("no-posts") == (
        "TwitterSnake", "PostsReceived", cid, "Sum", "LessThanThreshold", 1.0, 30, "breaching"
    )  # fmt: skip
    assert shape("uploads-stuck") == (
        "TwitterSnake", "OldestPendingFileAge", cid, "Maximum", "GreaterThanThreshold", 480.0, 1,
        "ignore",
    )  # fmt: skip
    assert shape("unhealthy") == (
        "TwitterSnake", "Healthy", cid, "Maximum", "LessThanThreshold", 1.0, 8, "breaching"
    )  # fmt: skip
    assert shape("disk-low") == (
        "TwitterSnake", "SpoolDiskFree", cid, "Minimum", "LessThanThreshold", 10.0, 5, "ignore"
    )  # fmt: skip
    assert shape("budget-paused") == (
        "TwitterSnake", "BudgetPaused", cid, "Maximum", "GreaterThanOrEqualToThreshold", 1.0, 1,
        "ignore",
    )  # fmt: skip
    # a failed compliance run at once; no successful one for 36 hours
    assert shape("compliance-failed") == (
        "TwitterSnake", "ComplianceRunFailed", cid, "Maximum", "GreaterThanOrEqualToThreshold",
        1.0, 1, "ignore",
    )  # fmt: skip
    assert shape("compliance-overdue") == (
        "TwitterSnake", "ComplianceRunAge", cid, "Maximum", "GreaterThanThreshold", 36 * 3600.0,
        1, "ignore",
    )  # fmt: skip

    (instance,) = [
        i
        for r in runner.client("ec2").describe_instances()["Reservations"]
        for i in r["Instances"]
        if i["State"]["Name"] != "terminated"
    ]
    iid = {"InstanceId": instance["InstanceId"]}
    assert shape("system-check") == (
        "AWS/EC2", "StatusCheckFailed_System", iid, "Maximum", "GreaterThanOrEqualToThreshold",
        1.0, 2, "missing",
    )  # fmt: skip
    assert found[f"{PREFIX}-system-check"]["AlarmActions"] == [
        "arn:aws:automate:us-east-1:ec2:recover",
        arn,
    ]
    assert shape("instance-check") == (
        "AWS/EC2", "StatusCheckFailed_Instance", iid, "Maximum", "GreaterThanOrEqualToThreshold",
        1.0, 3, "missing",
    )  # fmt: skip
    assert found[f"{PREFIX}-instance-check"]["AlarmActions"] == [arn]


def metrics_configuration(runner: Runner) -> dict | None:
    """The bucket's metrics configuration the no-uploads alarm rests on, None without one."""
    try:
        answer = runner.client("s3").get_bucket_metrics_configuration(Bucket=BUCKET, Id=METRICS_ID)
    except botocore.exceptions.ClientError as exc:
        assert exc.response["Error"]["Code"] == "NoSuchConfiguration", exc.response
        return None
    return answer["MetricsConfiguration"]


def collector_cloudwatch(runner: Runner):
    """CloudWatch, signed with the collector's key as the iam role stored it."""
    stored = yaml.safe_load(runner.creds.read_text())
    return boto3.client(
        "cloudwatch",
        endpoint_url=runner.url,
        region_name="us-east-1",
        aws_access_key_id=stored["collector_aws_access_key_id"],
        aws_secret_access_key=stored["collector_aws_secret_access_key"],
    )


def test_s3_counts_the_requests_under_the_collectors_prefix(alerted):
    runner, _ = alerted
    assert metrics_configuration(runner) == {"Id": METRICS_ID, "Filter": {"Prefix": KEY_PREFIX}}


def test_the_no_uploads_alarm_rests_on_s3s_own_count_of_puts(alerted):
    """AWS/S3 PutRequests for the configuration's filter: no PUT under the prefix for the
    no-posts window plus one rotation (30 + 1 minutes: the sandbox rotates every 5 s) alarms; a
    minute without a PUT has no data point, so missing data must breach."""
    runner, _ = alerted
    alarm = alarms(runner)[f"{PREFIX}-no-uploads"]
    dims = {d["Name"]: d["Value"] for d in alarm["Dimensions"]}
    assert (alarm["Namespace"], alarm["MetricName"], dims) == (
        "AWS/S3", "PutRequests", {"BucketName": BUCKET, "FilterId": METRICS_ID}
    )  # fmt: skip
    assert (alarm["Statistic"], alarm["ComparisonOperator"], alarm["Threshold"]) == (
        "Sum", "LessThanThreshold", 1.0
    )  # fmt: skip
    assert (alarm["Period"], alarm["EvaluationPeriods"], alarm["DatapointsToAlarm"]) == (60, 31, 31)
    assert alarm["TreatMissingData"] == "breaching"
    arn = topic_arn(runner)
    assert alarm["AlarmActions"] == [arn] and alarm["OKActions"] == [arn]


def test_no_key_can_publish_the_metric_the_no_uploads_alarm_watches(alerted):
    """The collector's key publishes its own metrics, not S3's: its policy allows PutMetricData
    only in TwitterSnake (moto checks the policy first: AccessDenied), and CloudWatch refuses
    AWS/ namespaces to every key, even one allowed everything (InvalidParameterValue)."""
    runner, _ = alerted
    datum = {
        "MetricName": "PutRequests",
        "Dimensions": [
            {"Name": "BucketName", "Value": BUCKET},
            {"Name": "FilterId", "Value": METRICS_ID},
        ],
        "Value": 1.0,
        "Unit": "Count",
    }
    collector = collector_cloudwatch(runner)
    collector.put_metric_data(Namespace="TwitterSnake", MetricData=[datum])  # its own: allowed
    with pytest.raises(botocore.exceptions.ClientError) as refused:
        collector.put_metric_data(Namespace="AWS/S3", MetricData=[datum])
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert "AccessDenied" in str(refused.value)

    administrator = runner.client("cloudwatch")  # Action "*"
    with pytest.raises(botocore.exceptions.ClientError) as invalid:
        administrator.put_metric_data(Namespace="AWS/S3", MetricData=[datum])
    assert invalid.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert invalid.value.response["Error"]["Code"] == "InvalidParameterValue"
    assert (
        invalid.value.response["Error"]["Message"]
        == "The value AWS/S3 for parameter Namespace is invalid."
    )
    published = administrator.list_metrics(Namespace="AWS/S3", MetricName="PutRequests")
    assert published["Metrics"] == []


def test_thresholds_follow_the_role_variables(alerted):
    runner, _ = alerted
    changed = runner.run(
        "provision",
        "-e",
        f"alerts_email={EMAIL}",
        "-e",
        "alerts_no_posts_minutes=120",
        "-e",
        "alerts_disk_free_percent=20",
        "-e",
        "collector_rotate_max_seconds=300",  # AWS's inventory
    )
    # the looped alarms task and S3's no-uploads alarm (its window follows), nothing else
    assert recap(changed.stdout)["changed"] == 2, changed.stdout[-3000:]
    assert changed.stdout.count("changed: [localhost] => (item=") == 2, changed.stdout[-3000:]
    found = alarms(runner)
    assert found[f"{PREFIX}-no-posts"]["EvaluationPeriods"] == 120
    # no PUT for the no-posts window plus one rotation (300 s: 5 minutes)
    assert found[f"{PREFIX}-no-uploads"]["EvaluationPeriods"] == 125
    assert found[f"{PREFIX}-disk-low"]["Threshold"] == 20.0


def test_without_the_compliance_timers_there_is_no_overdue_alarm(alerted):
    runner, _ = alerted
    email = ["-e", f"alerts_email={EMAIL}"]
    runner.run("provision", *email, "-e", "compliance_enabled=false", "--tags", "alerts")
    assert f"{PREFIX}-compliance-overdue" not in alarms(runner)
    assert f"{PREFIX}-compliance-failed" in alarms(runner)  # a run by hand can still fail
    runner.run("provision", *email, "-e", "alerts_compliance_overdue_hours=48", "--tags", "alerts")
    assert alarms(runner)[f"{PREFIX}-compliance-overdue"]["Threshold"] == 48 * 3600.0


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("alerts_email=not-an-address", "alerts_email must be one e-mail address"),
        ("alerts_no_posts_minutes=0", "alerts_no_posts_minutes must be between 1 and 1440"),
        ("alerts_budget_usd_per_month=-5", "alerts_budget_usd_per_month must be a number of USD"),
        (
            "alerts_compliance_overdue_hours=3000",
            "alerts_compliance_overdue_hours must be between 0 (no alarm) and 2160 hours",
        ),
    ],
)
def test_bad_alert_settings_fail_with_one_line(alerted, extra, message):
    runner, _ = alerted
    email = [] if extra.startswith("alerts_email") else ["-e", f"alerts_email={EMAIL}"]
    # only the checks run (tag alerts_preflight): the refusal comes before any AWS call
    proc = runner.run("provision", *email, "-e", extra, "--tags", "alerts_preflight", check=False)
    assert proc.returncode != 0
    assert message in proc.stdout


def test_a_monthly_budget_adds_the_spend_forecast_alarm(alerted):
    runner, _ = alerted
    email = ["-e", f"alerts_email={EMAIL}"]
    runner.run("provision", *email, "-e", "collector_budget_usd_per_month=150")
    forecast = alarms(runner)[f"{PREFIX}-spend-forecast"]
    assert forecast["MetricName"] == "EstimatedSpendUSDForecast"
    assert forecast["Threshold"] == 150.0
    assert forecast["ComparisonOperator"] == "GreaterThanThreshold"
    assert (forecast["Statistic"], forecast["EvaluationPeriods"]) == ("Minimum", 15)
    runner.run("provision", *email)  # no budget: no forecast alarm
    assert f"{PREFIX}-spend-forecast" not in alarms(runner)


def test_without_s3_request_metrics_there_is_neither_configuration_nor_alarm(alerted):
    runner, _ = alerted
    email = ["-e", f"alerts_email={EMAIL}"]
    off = ["-e", "alerts_s3_request_metrics=false", "--tags", "alerts"]
    first = runner.run("provision", *email, *off)
    assert recap(first.stdout)["changed"] == 2, first.stdout[-3000:]  # configuration and alarm
    assert metrics_configuration(runner) is None
    assert f"{PREFIX}-no-uploads" not in alarms(runner)
    assert f"{PREFIX}-no-posts" in alarms(runner)  # the collector's own alarms stay
    assert runner.client("s3").head_bucket(Bucket=BUCKET)  # the bucket stays
    # (removing what is already gone changes nothing: the second teardown below)
    runner.run("provision", *email, "--tags", "alerts")  # on again: both come back
    assert metrics_configuration(runner) == {"Id": METRICS_ID, "Filter": {"Prefix": KEY_PREFIX}}
    assert f"{PREFIX}-no-uploads" in alarms(runner)


def test_teardown_removes_alarms_and_topic_and_a_second_changes_nothing(alerted):
    runner, _ = alerted
    runner.run("teardown")
    assert alarms(runner) == {}
    assert topic_arn(runner) is None
    # the bucket and its data stay; S3's request metrics, which bill, do not
    assert runner.client("s3").head_bucket(Bucket=BUCKET)
    assert metrics_configuration(runner) is None
    assert runner.client("sns").list_subscriptions()["Subscriptions"] == []
    assert recap(runner.run("teardown").stdout)["changed"] == 0
