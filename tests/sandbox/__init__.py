"""The sandbox: a local stand-in for AWS, X and the EC2 instance, all on 127.0.0.1.

    python -m tests.sandbox up [--state-dir DIR] [--moto-port P ...]   # idempotent
    python -m tests.sandbox status | report | down

See world.py for what runs where, image.py for the Debian instance, miniforge.py for the
Miniforge stand-in and fixture.py for the pytest fixture the deploy tests use.
"""
