module tld.dev/tld/tests/mixed

go 1.22

require tld.dev/tld v0.0.0

replace tld.dev/tld => ../../../go
