"""`python -m seg2d ...` runs the Fire command line."""

from seg2d.cli import main

if __name__ == "__main__":
    main()
