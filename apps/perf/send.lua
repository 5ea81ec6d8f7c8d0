-- POST /send like bench/send.lua (~40 B JSON objects over 64 record keys).
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-API-Key"] = os.getenv("KRAFTWERK_API_KEY")
local n = 0
request = function()
  n = n + 1
  return wrk.format(nil, "/send?key=wrk-" .. (n % 64), nil, '{"bench":' .. n .. ',"source":"wrk"}')
end
