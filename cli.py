#!/usr/bin/env python
"""Run the tfxfer command line from a checkout: `python cli.py train --treatment BnB --n 4`."""
from tfxfer.cli import main

if __name__ == "__main__":
    main()
