"""Segments: filter trees compiled to one SQL query, and their materialised membership."""
