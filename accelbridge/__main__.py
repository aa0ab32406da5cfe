"""`python -m accelbridge` is the `accelbridge` command."""

from accelbridge.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
