"""Tests of `pinrepl.runs`."""
