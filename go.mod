module github.com/umltools/umltools

go 1.24
