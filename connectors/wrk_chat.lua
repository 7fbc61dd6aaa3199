-- wrk script for the gateway benchmark (connectors/bench.py): every request is a generic chat
-- webhook with its own message id, signed X-Threadline-Signature: sha256=<hex HMAC-SHA256>.
--
--   THREADLINE_WRK_SECRET     the gateway's webhook secret
--   THREADLINE_WRK_TEMPLATES  a file of JSON bodies, one a line, with @mid@ @n@ @session@ @visitor@
--                             placeholders (the bench writes it)
--   THREADLINE_WRK_RUN        a prefix of the message ids, unique per run
--
-- HMAC-SHA256 is computed here (LuaJIT bit ops), with the key's inner and outer blocks hashed
-- once: about six SHA-256 blocks per request. At the end one line is printed:
--   THREADLINE_WRK {"requests": ..., "duration_us": ..., "p50_us": ..., ...}

local bit = require("bit")
local band, bor, bxor, bnot = bit.band, bit.bor, bit.bxor, bit.bnot
local lshift, rshift, ror, tobit, tohex = bit.lshift, bit.rshift, bit.ror, bit.tobit, bit.tohex
local byte, char, rep, concat = string.byte, string.char, string.rep, table.concat

local K = {
  0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
  0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
  0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
  0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
  0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
  0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
  0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
  0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
}
for i = 1, 64 do K[i] = tobit(K[i]) end
local H0 = { 0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19 }
for i = 1, 8 do H0[i] = tobit(H0[i]) end

local w = {}

-- One 64-byte block of ``s`` at ``off`` (1-based) into the state ``H``.
local function compress(H, s, off)
  for i = 0, 15 do
    local a, b, c, d = byte(s, off + i * 4, off + i * 4 + 3)
    w[i] = bor(lshift(a, 24), lshift(b, 16), lshift(c, 8), d)
  end
  for i = 16, 63 do
    local v15, v2 = w[i - 15], w[i - 2]
    local s0 = bxor(ror(v15, 7), ror(v15, 18), rshift(v15, 3))
    local s1 = bxor(ror(v2, 17), ror(v2, 19), rshift(v2, 10))
    w[i] = tobit(w[i - 16] + s0 + w[i - 7] + s1)
  end
  local a, b, c, d, e, f, g, h = H[1], H[2], H[3], H[4], H[5], H[6], H[7], H[8]
  for i = 0, 63 do
    local S1 = bxor(ror(e, 6), ror(e, 11), ror(e, 25))
    local ch = bxor(band(e, f), band(bnot(e), g))
    local t1 = tobit(h + S1 + ch + K[i + 1] + w[i])
    local S0 = bxor(ror(a, 2), ror(a, 13), ror(a, 22))
    local maj = bxor(band(a, b), band(a, c), band(b, c))
    local t2 = tobit(S0 + maj)
    h, g, f, e, d, c, b, a = g, f, e, tobit(d + t1), c, b, a, tobit(t1 + t2)
  end
  H[1], H[2], H[3], H[4] = tobit(H[1] + a), tobit(H[2] + b), tobit(H[3] + c), tobit(H[4] + d)
  H[5], H[6], H[7], H[8] = tobit(H[5] + e), tobit(H[6] + f), tobit(H[7] + g), tobit(H[8] + h)
end

local function be32(x)
  return char(band(rshift(x, 24), 255), band(rshift(x, 16), 255), band(rshift(x, 8), 255), band(x, 255))
end

-- Finish a hash: ``msg`` follows ``prefix`` bytes already compressed into ``state``.
local function finish(state, msg, prefix)
  local H = { state[1], state[2], state[3], state[4], state[5], state[6], state[7], state[8] }
  local total = prefix + #msg
  local pad = 64 - (total + 9) % 64
  if pad == 64 then pad = 0 end
  local bits = total * 8
  local data = msg .. "\128" .. rep("\0", pad) .. be32(math.floor(bits / 4294967296)) .. be32(bits % 4294967296)
  for off = 1, #data, 64 do compress(H, data, off) end
  return H
end

local function sha256(msg)
  return finish(H0, msg, 0)
end

local function raw(H)
  local out = {}
  for i = 1, 8 do out[i] = be32(H[i]) end
  return concat(out)
end

local function hex(H)
  local out = {}
  for i = 1, 8 do out[i] = tohex(H[i], 8) end
  return concat(out)
end

-- The key's inner and outer states, hashed once.
local function hmac_key(key)
  if #key > 64 then key = raw(sha256(key)) end
  key = key .. rep("\0", 64 - #key)
  local ipad, opad = {}, {}
  for i = 1, 64 do
    local k = byte(key, i)
    ipad[i] = char(bxor(k, 0x36))
    opad[i] = char(bxor(k, 0x5c))
  end
  local inner = { unpack(H0) }
  local outer = { unpack(H0) }
  compress(inner, concat(ipad), 1)
  compress(outer, concat(opad), 1)
  return inner, outer
end

local function hmac_hex(inner, outer, msg)
  return hex(finish(outer, raw(finish(inner, msg, 64)), 64))
end

-- -----------------------------------------------------------------------------------------
-- wrk hooks

local counter = 0
local thread_no = 0

function setup(thread)
  thread_no = thread_no + 1
  thread:set("thread_no", thread_no)
end

local inner, outer, templates, run

function init(args)
  local secret = os.getenv("THREADLINE_WRK_SECRET") or ""
  inner, outer = hmac_key(secret)
  run = (os.getenv("THREADLINE_WRK_RUN") or "wrk") .. "-t" .. tostring(thread_no or 0)
  templates = {}
  local path = os.getenv("THREADLINE_WRK_TEMPLATES")
  if path then
    for line in io.lines(path) do
      if #line > 0 then templates[#templates + 1] = line end
    end
  end
  if #templates == 0 then
    templates[1] = '{"message_id":"@mid@","session_id":"s-@session@","visitor_id":"v-@visitor@",'
      .. '"sent_at":"2026-11-22T08:00:00+00:00","text":"Order @n@ arrived broken"}'
  end
  if args and args[1] == "selftest" then
    -- RFC 4231 test case 2 and SHA-256("abc"): a wrong build of this file fails loudly.
    local i2, o2 = hmac_key("Jefe")
    assert(hmac_hex(i2, o2, "what do ya want for nothing?") ==
      "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843", "HMAC-SHA256 self-test failed")
    assert(hex(sha256("abc")) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
      "SHA-256 self-test failed")
  end
end

function request()
  counter = counter + 1
  local tpl = templates[(counter - 1) % #templates + 1]
  local vals = { mid = run .. "-" .. counter, n = tostring(100000 + counter % 900000),
                 session = tostring(math.floor(counter / 5)), visitor = tostring(counter % 997) }
  local body = tpl:gsub("@(%w+)@", vals)
  local headers = { ["Content-Type"] = "application/json",
                    ["X-Threadline-Signature"] = "sha256=" .. hmac_hex(inner, outer, body) }
  return wrk.format("POST", nil, headers, body)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'THREADLINE_WRK {"requests": %d, "duration_us": %d, "bytes": %d, "p50_us": %d, "p90_us": %d, ' ..
    '"p99_us": %d, "max_us": %d, "mean_us": %.1f, "errors_connect": %d, "errors_read": %d, ' ..
    '"errors_write": %d, "errors_status": %d, "errors_timeout": %d}\n',
    summary.requests, summary.duration, summary.bytes, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, latency.mean, e.connect, e.read, e.write, e.status, e.timeout))
end
