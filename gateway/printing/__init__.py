"""Printing to receipt printers over raw TCP (AppSocket/JetDirect, port 9100)."""
