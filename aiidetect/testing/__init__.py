"""Corpora and checkers shared by the test suite and the benchmarks: image
makers (`images`), the hostile-file corpus (`hostile`), dataset layouts
(`layouts`), report pages and their checks (`report_corpus`, `htmlcheck`) and an
independent provenance reader to compare against (`provenance_peer`). The
scanner never imports this package."""
