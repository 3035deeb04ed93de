"""The sandbox: a local stand-in for AWS, X and the EC2 instance, all on 127.0.0.1.

    python -m tests.sandbox up [--state-dir DIR] [--moto-port P ...]   # idempotent
    python -m tests.sandbox status | report | down
    python -m tests.sandbox ssh 'sudo systemctl status supervisor'
    python -m tests.sandbox reboot      # systemctl reboot on the instance; back when sshd answers

See world.py for what runs where, image.py for the Debian instance, boot.py for how it boots
(systemd as PID 1), miniforge.py for the Miniforge stand-in and fixture.py for the pytest
fixture the deploy tests use.
"""
