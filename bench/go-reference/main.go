// The reference for `cargo xtask bench`: a bare Go net/http server with the
// same two routes the Rust service is measured on. It has no metrics and no
// request log, as in the Go service this workspace replaces.
package main

import (
	"encoding/json"
	"flag"
	"log"
	"net/http"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:8081", "address to listen on")
	flag.Parse()
	http.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"status":"ok"}`))
	})
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]string{
			"service": "app", "version": "0.1.0", "message": "Hello from app",
		})
	})
	log.Fatal(http.ListenAndServe(*listen, nil))
}
