"""moto's server, authorizing each request under the IAM action name AWS uses.

    python -m tests.fakes.moto_iam_server -H 127.0.0.1 -p PORT   (moto.server's arguments)

moto 5.2.5 authorizes a request as "<service>:<Action>", the service taken from the SigV4
credential scope, which is the signing name. For CloudWatch that is "monitoring", while IAM's
service prefix is "cloudwatch" (AWS Service Authorization Reference, "Actions, resources, and
condition keys for Amazon CloudWatch",
https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazoncloudwatch.html).
Unchanged, moto would refuse cloudwatch:PutMetricData to a policy that grants it, as AWS does
not. This launcher maps the signing name to the IAM prefix before moto evaluates the policies;
everything else is moto as released.
"""

from __future__ import annotations

from moto.iam import access_control
from moto.server import main

IAM_PREFIX_BY_SIGNING_NAME = {"monitoring": "cloudwatch"}

_moto_init = access_control.IAMRequestBase.__init__


def _init_with_iam_prefix(self, *args, **kwargs) -> None:
    _moto_init(self, *args, **kwargs)
    service, _, action = self._action.partition(":")
    self._action = f"{IAM_PREFIX_BY_SIGNING_NAME.get(service, service)}:{action}"


access_control.IAMRequestBase.__init__ = _init_with_iam_prefix

if __name__ == "__main__":
    main()
