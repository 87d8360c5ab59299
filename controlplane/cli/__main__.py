"""`python -m controlplane.cli ...`: the `controlplane` command."""

from controlplane.cli import main

if __name__ == "__main__":
    main()
