"""Corpora and checkers shared by the test suite and the benchmarks: image
makers (`images`), the hostile-file corpus (`hostile`), phone photos' layouts (`phone`: gain maps, Motion
Photos, Samsung's trailer, HEIF auxiliary images), dataset layouts
(`layouts`), report pages and their checks (`report_corpus`, `htmlcheck`) and an
independent provenance reader to compare against (`provenance_peer`). The
scanner never imports this package."""
