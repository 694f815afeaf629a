"""Pieces every app shares and none owns: access checks, size units, admin bases.

Nothing here imports an app; every app may import from here.
"""
