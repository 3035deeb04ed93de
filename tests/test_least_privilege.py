"""Least privilege, proven on a moto that enforces IAM (the `moto_iam` fixture)."""

from __future__ import annotations

import botocore.exceptions
import pytest

from tests.conftest import AccessKey


def error_code(excinfo: pytest.ExceptionInfo) -> str:
    return excinfo.value.response["Error"]["Code"]


def test_moto_iam_refuses_what_a_narrow_policy_lacks(moto_iam):
    admin_s3 = moto_iam.client("s3")
    admin_s3.create_bucket(Bucket="allowed")
    admin_s3.create_bucket(Bucket="other")
    reader = moto_iam.create_user(
        "reader",
        {
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::allowed/*"}
            ],
        },
    )
    admin_s3.put_object(Bucket="allowed", Key="a.txt", Body=b"a")
    admin_s3.put_object(Bucket="other", Key="b.txt", Body=b"b")
    s3 = moto_iam.client("s3", reader)

    assert s3.get_object(Bucket="allowed", Key="a.txt")["Body"].read() == b"a"
    with pytest.raises(botocore.exceptions.ClientError) as refused:
        s3.get_object(Bucket="other", Key="b.txt")
    assert error_code(refused) == "AccessDenied"
    with pytest.raises(botocore.exceptions.ClientError) as refused:
        s3.put_object(Bucket="allowed", Key="c.txt", Body=b"c")
    assert error_code(refused) == "AccessDenied"
    with pytest.raises(botocore.exceptions.ClientError) as refused:
        moto_iam.client("iam", reader).list_users()
    assert error_code(refused) == "AccessDenied"


def test_moto_iam_refuses_unknown_keys_and_bad_signatures(moto_iam):

    stranger = AccessKey("stranger", "AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCY")
    with pytest.raises(botocore.exceptions.ClientError) as refused:
        moto_iam.client("s3", stranger).list_buckets()
    assert error_code(refused) == "InvalidAccessKeyId"
    forged = AccessKey("administrator", moto_iam.admin.access_key_id, "not-the-secret")
    with pytest.raises(botocore.exceptions.ClientError) as refused:
        moto_iam.client("s3", forged).list_buckets()
    assert error_code(refused) == "SignatureDoesNotMatch"
