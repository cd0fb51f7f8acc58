package main

import (
	crand "crypto/rand"
	"fmt"
	"io"
	"math/rand"
	"net"
	"net/http"
	"os"
	"time"
)

func main() {
	now := time.Now()
	fmt.Println("now", now.UnixNano())
	r := rand.New(rand.NewSource(now.UnixNano()))
	fmt.Println("mathrand", r.Int63(), r.Int63())
	b := make([]byte, 16)
	if _, err := crand.Read(b); err != nil {
		fmt.Println("crypto/rand:", err)
		os.Exit(3)
	}
	fmt.Printf("cryptorand %x\n", b)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Println("listen:", err)
		os.Exit(4)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, req *http.Request) {
		fmt.Fprintf(w, "hello %s %d", req.URL.Path, time.Now().UnixNano())
	})
	go http.Serve(ln, mux)
	client := &http.Client{Timeout: 10 * time.Second}
	for i := 0; i < 3; i++ {
		resp, err := client.Get(fmt.Sprintf("http://%s/r%d", ln.Addr(), i))
		if err != nil {
			fmt.Println("get:", err)
			os.Exit(5)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		fmt.Println("resp", resp.StatusCode, string(body))
	}
}
