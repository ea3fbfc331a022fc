module tld.dev/tld/go

go 1.22
