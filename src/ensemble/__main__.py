"""`python -m ensemble ...` (also what `accelerate launch -m ensemble fit RECIPE` runs)."""

from .cli import main

main()
