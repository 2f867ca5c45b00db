"""Normalisation: the complaint schema, ids and tracking codes, text and contact cleaning.

Imports no I/O library (no aiohttp, aiokafka, database drivers).
"""
