-- crm_hub gateway: one JSON shape for every REST error, whoever produced it.
--
--   {"success": false, "code": <gRPC code>, "message": "...", "reason": "MACHINE_READABLE", "details": [...]}
--
-- Sources of an error response and what this script does with each:
--   * a crm_hub RPC failed: the transcoder (convert_grpc_status) already sent google.rpc.Status JSON
--     {code, message, details}; "success" is added and "reason" is copied up from the google.rpc.ErrorInfo
--     detail (or named after the gRPC code when there is none).
--   * Envoy refused the request itself (unknown path, malformed JSON, unknown query parameter, no healthy
--     upstream...): local_reply_config made it {success:false, code:<HTTP status>, message, reason:<Envoy's
--     response code details>}; this script turns the code into the gRPC code, picks a reason from the facts
--     and adds an ErrorInfo detail, so a client parses both kinds alike.
--   * anything else >= 400 that is not JSON: wrapped as the message.
-- Native gRPC responses (application/grpc) and successes are never touched; nor are grpc-status headers.
--
-- Envoy's Lua (LuaJIT, 5.1) has no JSON library: the small parser below finds value boundaries and decodes
-- strings; values that are not rewritten are copied through byte for byte.

local ERROR_DOMAIN = "crm_hub"
local ERROR_INFO_TYPE = "type.googleapis.com/google.rpc.ErrorInfo"
local MAX_DEPTH = 64

local GRPC_CODE_NAMES = {
  [0] = "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND", "ALREADY_EXISTS",
  "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED",
  "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED",
}

-- HTTP status of an Envoy reply -> gRPC code (the inverse of the transcoder's mapping where it has one).
local GRPC_CODE_FOR_STATUS = {
  [400] = 3, [401] = 16, [403] = 7, [404] = 5, [405] = 12, [408] = 4, [409] = 10, [413] = 8, [429] = 8,
  [499] = 1, [500] = 13, [501] = 12, [502] = 14, [503] = 14, [504] = 4,
}

-- A reason header a filter may set on its own local reply; read and removed here.
local REASON_HEADER = "x-crm-hub-error-reason"

-- ---------------------------------------------------------------------------------------------------------
-- JSON

local function utf8_char(cp)
  local floor = math.floor
  if cp < 0x80 then
    return string.char(cp)
  elseif cp < 0x800 then
    return string.char(0xC0 + floor(cp / 0x40), 0x80 + cp % 0x40)
  elseif cp < 0x10000 then
    return string.char(0xE0 + floor(cp / 0x1000), 0x80 + floor(cp / 0x40) % 0x40, 0x80 + cp % 0x40)
  end
  return string.char(0xF0 + floor(cp / 0x40000), 0x80 + floor(cp / 0x1000) % 0x40,
    0x80 + floor(cp / 0x40) % 0x40, 0x80 + cp % 0x40)
end

local SIMPLE_ESCAPES = { ['"'] = '"', ["\\"] = "\\", ["/"] = "/", b = "\b", f = "\f", n = "\n", r = "\r", t = "\t" }

local function skip_space(s, i)
  local _, last = s:find("^[ \t\r\n]*", i)
  return last + 1
end

-- s:sub(i, i) is the opening quote. Returns the decoded string and the index after the closing quote.
local function parse_string(s, i)
  local parts = {}
  local j = i + 1
  while true do
    local special = s:find('["\\]', j)
    if special == nil then error("unterminated string") end
    local run = s:sub(j, special - 1)
    if run:find("[%z\1-\31]") then error("control character in string") end
    parts[#parts + 1] = run
    if s:sub(special, special) == '"' then
      return table.concat(parts), special + 1
    end
    local escape = s:sub(special + 1, special + 1)
    if escape == "u" then
      local hex = s:sub(special + 2, special + 5)
      if not hex:match("^%x%x%x%x$") then error("bad \\u escape") end
      local cp = tonumber(hex, 16)
      j = special + 6
      if cp >= 0xD800 and cp <= 0xDBFF and s:sub(j, j + 1) == "\\u" then
        local low = tonumber(s:sub(j + 2, j + 5), 16)
        if low ~= nil and low >= 0xDC00 and low <= 0xDFFF then
          cp = 0x10000 + (cp - 0xD800) * 0x400 + (low - 0xDC00)
          j = j + 6
        end
      end
      parts[#parts + 1] = utf8_char(cp)
    elseif SIMPLE_ESCAPES[escape] ~= nil then
      parts[#parts + 1] = SIMPLE_ESCAPES[escape]
      j = special + 2
    else
      error("bad escape")
    end
  end
end

local parse_value

-- Returns a node {kind, raw, value | entries | items} and the index after the value.
-- entries (objects) keep their order: {key, raw_key, node}.
parse_value = function(s, i, depth)
  if depth > MAX_DEPTH then error("too deeply nested") end
  i = skip_space(s, i)
  local c = s:sub(i, i)
  local start = i
  if c == "{" then
    local entries = {}
    i = skip_space(s, i + 1)
    if s:sub(i, i) == "}" then
      return { kind = "object", entries = entries, raw = s:sub(start, i) }, i + 1
    end
    while true do
      if s:sub(i, i) ~= '"' then error("expected a key") end
      local key_start = i
      local key
      key, i = parse_string(s, i)
      local raw_key = s:sub(key_start, i - 1)
      i = skip_space(s, i)
      if s:sub(i, i) ~= ":" then error("expected ':'") end
      local node
      node, i = parse_value(s, i + 1, depth + 1)
      entries[#entries + 1] = { key = key, raw_key = raw_key, node = node }
      i = skip_space(s, i)
      local separator = s:sub(i, i)
      if separator == "}" then
        return { kind = "object", entries = entries, raw = s:sub(start, i) }, i + 1
      end
      if separator ~= "," then error("expected ',' or '}'") end
      i = skip_space(s, i + 1)
    end
  elseif c == "[" then
    local items = {}
    i = skip_space(s, i + 1)
    if s:sub(i, i) == "]" then
      return { kind = "array", items = items, raw = s:sub(start, i) }, i + 1
    end
    while true do
      local node
      node, i = parse_value(s, i, depth + 1)
      items[#items + 1] = node
      i = skip_space(s, i)
      local separator = s:sub(i, i)
      if separator == "]" then
        return { kind = "array", items = items, raw = s:sub(start, i) }, i + 1
      end
      if separator ~= "," then error("expected ',' or ']'") end
      i = i + 1
    end
  elseif c == '"' then
    local value
    value, i = parse_string(s, i)
    return { kind = "string", value = value, raw = s:sub(start, i - 1) }, i
  end
  local number = s:match("^-?%d+%.?%d*[eE]?[-+]?%d*", i)
  if number ~= nil and number ~= "" and number ~= "-" then
    return { kind = "number", value = tonumber(number), raw = number }, i + #number
  end
  for _, literal in ipairs({ "true", "false", "null" }) do
    if s:sub(i, i + #literal - 1) == literal then
      return { kind = literal, raw = literal }, i + #literal
    end
  end
  error("unexpected character at " .. i)
end

local function parse(text)
  local ok, node, after = pcall(parse_value, text, 1, 0)
  if not ok or skip_space(text, after) <= #text then return nil end
  return node
end

local function quote(s)
  local escaped = s:gsub('[%z\1-\31"\\]', function(c)
    if c == '"' then return '\\"' end
    if c == "\\" then return "\\\\" end
    if c == "\n" then return "\\n" end
    if c == "\r" then return "\\r" end
    if c == "\t" then return "\\t" end
    return string.format("\\u%04x", c:byte())
  end)
  return '"' .. escaped .. '"'
end

local function field(object, key)
  for _, entry in ipairs(object.entries) do
    if entry.key == key then return entry.node end
  end
  return nil
end

-- ---------------------------------------------------------------------------------------------------------
-- Reasons

local function error_info_reason(details)
  if details == nil or details.kind ~= "array" then return nil end
  for _, detail in ipairs(details.items) do
    if detail.kind == "object" then
      local type_url = field(detail, "@type")
      local reason = field(detail, "reason")
      if type_url ~= nil and type_url.value == ERROR_INFO_TYPE and reason ~= nil and reason.kind == "string"
        and reason.value ~= "" then
        return reason.value
      end
    end
  end
  return nil
end

local function grpc_code_for_status(status)
  return GRPC_CODE_FOR_STATUS[status] or (status >= 500 and 13 or 3)
end

-- Envoy's own refusal: what went wrong, from the HTTP status, Envoy's response code details and message.
local function local_reply_reason(status, envoy_details, message)
  if status == 400 then
    if message:find("^Could not find field") then return "UNKNOWN_QUERY_PARAMETER" end
    if message:find("is conflicting with the value") then return "BODY_FIELD_COLLISION" end
    if envoy_details:find("grpc_json_transcode_failure", 1, true) then
      -- "<field>: invalid value ..." / ": Root element must be a message.": JSON, but not of this shape.
      if message:find("^[%w_%.%[%]]*: ") then return "INVALID_ARGUMENT" end
      return "INVALID_JSON"
    end
    return "INVALID_ARGUMENT"
  end
  if status == 404 then return "NOT_FOUND" end
  if status == 413 then return "PAYLOAD_TOO_LARGE" end
  if status == 502 or status == 503 then return "UNAVAILABLE" end
  if status == 408 or status == 504 then return "DEADLINE_EXCEEDED" end
  return GRPC_CODE_NAMES[grpc_code_for_status(status)]
end

local function error_info(reason)
  return "[{" .. quote("@type") .. ":" .. quote(ERROR_INFO_TYPE) .. "," .. quote("reason") .. ":" .. quote(reason)
    .. "," .. quote("domain") .. ":" .. quote(ERROR_DOMAIN) .. "," .. quote("metadata") .. ":{}}]"
end

local function error_body(code, message, reason, details_raw, rest)
  local parts = {
    quote("success") .. ":false",
    quote("code") .. ":" .. code,
    quote("message") .. ":" .. quote(message),
    quote("reason") .. ":" .. quote(reason),
    quote("details") .. ":" .. details_raw,
  }
  for _, entry in ipairs(rest or {}) do
    parts[#parts + 1] = entry.raw_key .. ":" .. entry.node.raw
  end
  return "{" .. table.concat(parts, ",") .. "}"
end

local OWN_KEYS = { success = true, code = true, message = true, reason = true, details = true }

local function rewrite(status, text, reason_header)
  local body = parse(text)
  if body == nil or body.kind ~= "object" then
    local message = text:gsub("^%s+", ""):gsub("%s+$", "")
    if message == "" then message = "Request failed with HTTP status " .. status .. "." end
    local reason = reason_header or local_reply_reason(status, "", message)
    return error_body(grpc_code_for_status(status), message, reason, error_info(reason))
  end
  local rest = {}
  for _, entry in ipairs(body.entries) do
    if not OWN_KEYS[entry.key] then rest[#rest + 1] = entry end
  end
  local message_node = field(body, "message")
  local message = (message_node ~= nil and message_node.kind == "string") and message_node.value or ""
  local details = field(body, "details")
  if field(body, "success") ~= nil and details == nil then
    -- Envoy's local reply: code is the HTTP status, reason Envoy's response code details.
    local envoy_details = field(body, "reason")
    envoy_details = (envoy_details ~= nil and envoy_details.kind == "string") and envoy_details.value or ""
    local reason = reason_header or local_reply_reason(status, envoy_details, message)
    if message == "" then message = "Request failed with HTTP status " .. status .. "." end
    return error_body(grpc_code_for_status(status), message, reason, error_info(reason), rest)
  end
  -- google.rpc.Status from the transcoder.
  local code_node = field(body, "code")
  local code = (code_node ~= nil and code_node.kind == "number") and code_node.value or grpc_code_for_status(status)
  local reason = error_info_reason(details) or reason_header or GRPC_CODE_NAMES[code] or "UNKNOWN"
  local details_raw = (details ~= nil and details.kind == "array") and details.raw or "[]"
  return error_body(code, message, reason, details_raw, rest)
end

-- ---------------------------------------------------------------------------------------------------------
-- Envoy hooks

local function is_grpc(content_type)
  return content_type ~= nil and content_type:find("^application/grpc") ~= nil
end

local function url_decode(s)
  s = s:gsub("%+", " ")
  return (s:gsub("%%(%x%x)", function(hex) return string.char(tonumber(hex, 16)) end))
end

-- The transcoder lets a query parameter override a path variable (/leads/a?leadId=b reads lead b). Refuse
-- query parameters named like any path variable; the route's Lua metadata lists them.
function envoy_on_request(request_handle)
  local headers = request_handle:headers()
  if is_grpc(headers:get("content-type")) then return end
  local query = (headers:get(":path") or ""):match("%?(.*)$")
  if query == nil or query == "" then return end
  local path_variables = request_handle:metadata():get("path_variables")
  if path_variables == nil then return end
  local forbidden = {}
  for _, name in pairs(path_variables) do forbidden[name] = true end
  for pair in query:gmatch("[^&]+") do
    local name = url_decode(pair:match("^[^=]*"))
    if forbidden[name] then
      request_handle:respond(
        { [":status"] = "400", [REASON_HEADER] = "PATH_VARIABLE_IN_QUERY" },
        "Query parameter '" .. name .. "' names a path variable; give it in the path only."
      )
      return
    end
  end
end

function envoy_on_response(response_handle)
  local headers = response_handle:headers()
  local status = tonumber(headers:get(":status"))
  if status == nil or status < 400 or is_grpc(headers:get("content-type")) then return end
  local reason_header = headers:get(REASON_HEADER)
  headers:remove(REASON_HEADER)
  local body = response_handle:body()  -- buffers the whole (small) error body
  if body == nil then return end
  local rewritten = rewrite(status, body:getBytes(0, body:length()), reason_header)
  body:setBytes(rewritten)
  headers = response_handle:headers()
  headers:replace("content-type", "application/json")
  headers:replace("content-length", tostring(#rewritten))
end
