//! routing: owns pattern -> pool lookup (Go `net/http.ServeMux` rules); pure, no I/O.
