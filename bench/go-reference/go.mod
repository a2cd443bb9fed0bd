module example.com/go-reference

go 1.19
