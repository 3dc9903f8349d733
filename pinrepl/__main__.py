"""`python -m pinrepl`: the same as the `pinrepl` command."""

from .cli import main

main()
