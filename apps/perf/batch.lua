-- POST /send/batch with the body in $BATCH_FILE (made by loadtest.py: 100 messages of ~200 B).
wrk.method = "POST"
wrk.path = "/send/batch"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-API-Key"] = os.getenv("KRAFTWERK_API_KEY")
local f = assert(io.open(os.getenv("BATCH_FILE"), "r"))
wrk.body = f:read("*a")
f:close()
