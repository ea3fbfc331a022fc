module tld.dev/tld

go 1.22
