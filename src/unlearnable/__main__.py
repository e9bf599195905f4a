"""``python -m unlearnable`` (and ``torchrun -m unlearnable``) run the CLI."""

from .cli import main

if __name__ == "__main__":
    main()
