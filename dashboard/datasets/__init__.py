"""Datasets: upload and parsing (CSV, JSONL, XLSX, pasted or JSON rows), the
rows in their own table, and prompt templates rendered over them."""
