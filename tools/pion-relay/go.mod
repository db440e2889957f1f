// A stub: the program builds in GOPATH mode (GO111MODULE=off) against
// Debian's packages under /usr/share/gocode, offline. This file only makes
// the go tool accept the `/v3` and `/v2` import paths there (minimal module
// compatibility); it lists no requirements and is not used to download.
module pion-relay

go 1.19
