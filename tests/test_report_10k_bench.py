"""benchmarks/report_10k.py --print counts the PDF's pages from its bytes; docs/report.md quotes that count."""
from __future__ import annotations


from conftest import load_script


def _bench():
    return load_script("benchmarks/report_10k.py")


def test_pdf_page_count_counts_pages_not_the_page_tree():
    # Two pages under one /Pages node, written as Chromium writes them (with and without a space after /Type).
    pdf = (b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog /Pages 2 0 R >>\nendobj\n"
           b"2 0 obj\n<< /Type /Pages /Kids [3 0 R 4 0 R] /Count 2 >>\nendobj\n"
           b"3 0 obj\n<< /Type /Page /Parent 2 0 R >>\nendobj\n"
           b"4 0 obj\n<</Type/Page/Parent 2 0 R>>\nendobj\ntrailer\n<< /Root 1 0 R >>\n%%EOF\n")
    assert _bench().pdf_pages(pdf) == 2
