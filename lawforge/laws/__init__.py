"""Laws as data: whitelisted expression parsing, the Law type, and SLDBench metrics."""
