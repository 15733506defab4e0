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
-- On the way in (envoy_on_request), every request loses the headers gRPC cannot carry, and REST requests
-- are checked against what the route metadata (rendered from the HTTP rules by config.py) says the API
-- serves: URL length and encoding, the verbs of each path, query parameters, the body's type and size, and
-- JSON objects where the transcoder would produce a corrupt message instead of refusing them.
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
  [400] = 3, [401] = 16, [403] = 7, [404] = 5, [405] = 12, [408] = 4, [409] = 10, [413] = 8, [414] = 8,
  [415] = 3, [429] = 8, [431] = 8, [499] = 1, [500] = 13, [501] = 12, [502] = 14, [503] = 14, [504] = 4,
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
  if status == 405 then return "METHOD_NOT_ALLOWED" end
  if status == 408 then return "REQUEST_TIMEOUT" end
  if status == 413 then return "REQUEST_TOO_LARGE" end
  if status == 414 then return "URI_TOO_LONG" end
  if status == 415 then return "UNSUPPORTED_MEDIA_TYPE" end
  if status == 431 then return "HEADERS_TOO_LARGE" end
  if status == 502 or status == 503 then return "UNAVAILABLE" end
  if status == 504 then return "DEADLINE_EXCEEDED" end
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

local function percent_decode(s)
  return (s:gsub("%%(%x%x)", function(hex) return string.char(tonumber(hex, 16)) end))
end

local function url_decode(s)
  return percent_decode((s:gsub("%+", " ")))
end

-- Strict UTF-8: no overlong forms, no surrogates, nothing above U+10FFFF.
local function is_utf8(s)
  if not s:find("[\128-\255]") then return true end
  local i, n = 1, #s
  while i <= n do
    local c = s:byte(i)
    local length, low, high = 1, 0x80, 0xBF
    if c < 0x80 then
      length = 1
    elseif c >= 0xC2 and c <= 0xDF then
      length = 2
    elseif c >= 0xE0 and c <= 0xEF then
      length = 3
      if c == 0xE0 then low = 0xA0 elseif c == 0xED then high = 0x9F end
    elseif c >= 0xF0 and c <= 0xF4 then
      length = 4
      if c == 0xF0 then low = 0x90 elseif c == 0xF4 then high = 0x8F end
    else
      return false
    end
    if i + length - 1 > n then return false end
    for k = 1, length - 1 do
      local continuation = s:byte(i + k)
      local min, max = 0x80, 0xBF
      if k == 1 then min, max = low, high end
      if continuation < min or continuation > max then return false end
    end
    i = i + length
  end
  return true
end

-- A gRPC metadata key is [0-9a-z_.-]; HTTP allows more (| ' ^ * & ~ ! # $ % + `), and gRPC refuses the
-- whole call over such a header ("Illegal header key"). They mean nothing to crm_hub: dropped, not refused.
-- REST requests also lose grpc-* (the transcoder speaks gRPC for them; a malformed grpc-timeout fails the
-- call) and *-bin headers (binary gRPC metadata, which must be base64: an HTTP client cannot mean it).
local function drop_headers_grpc_cannot_carry(headers, grpc)
  local dropped = {}
  for name, _ in pairs(headers) do
    if name:sub(1, 1) ~= ":" then
      local key = name:lower()
      if not key:find("^[0-9a-z_.%-]+$")
        or (not grpc and (key:find("^grpc%-") or key:find("%-bin$"))) then
        dropped[#dropped + 1] = name
      end
    end
  end
  for _, name in ipairs(dropped) do headers:remove(name) end
end

-- "/integrations/x/start/" -> {"integrations", "x", "start"}: trailing slashes dropped and inner empty
-- segments kept, as the transcoder matches them.
local function path_segments(path)
  local segments = {}
  local trimmed = path:gsub("/+$", "")
  for segment in (trimmed:sub(2) .. "/"):gmatch("([^/]*)/") do segments[#segments + 1] = segment end
  if trimmed == "" then segments = {} end
  return segments
end

local function template_matches(template, segments)
  for i, part in ipairs(template) do
    if part == "**" then return true end
    local segment = segments[i]
    if segment == nil or (part ~= "*" and part ~= segment) then return false end
  end
  return #segments == #template
end

-- The verbs the REST paths matching `segments` serve (a set) and the matching route's entry for `method`.
local function route_for(routes, segments, method)
  local verbs, found = {}, nil
  for _, route in ipairs(routes) do
    if template_matches(route.segments, segments) then
      for verb, spec in pairs(route.methods) do
        verbs[verb] = true
        if verb == method and found == nil then found = spec end
      end
    end
  end
  return verbs, found
end

local function refuse(handle, status, reason, message, extra_headers)
  local headers = { [":status"] = tostring(status), [REASON_HEADER] = reason }
  for name, value in pairs(extra_headers or {}) do headers[name] = value end
  handle:respond(headers, message)
end

-- application/json, with or without parameters; a charset, if given, must be UTF-8 (RFC 8259).
local function is_json(content_type)
  local media_type, parameters = content_type:lower():match("^%s*([^;%s]+)%s*(.*)$")
  if media_type ~= "application/json" then return false end
  local charset = parameters:match("charset%s*=%s*\"?([%w_%-]+)")
  return charset == nil or charset == "utf-8" or charset == "utf8"
end

-- The body, if the request has one (read whole: the buffer limit is the body limit), else nil.
local function request_body(handle, headers)
  local length = headers:get("content-length")
  if length == "0" then return nil end
  local body = handle:body()
  if body == nil or body:length() == 0 then return nil end
  return body
end

-- A JSON object as the value of a map<string, scalar> field: the transcoder would send a corrupt message
-- instead of refusing it (other wrong types it refuses itself). Returns the refusal message, or nil.
local function misplaced_object(text, scalar_maps)
  local body = parse(text)
  if body == nil or body.kind ~= "object" then return nil end  -- the transcoder explains that
  local function check_map(name, node)
    if node.kind ~= "object" then return nil end
    for _, entry in ipairs(node.entries) do
      if entry.node.kind == "object" then
        local where = name == "" and entry.key or (name .. "[" .. entry.key .. "]")
        return where .. ": invalid value, expected " .. scalar_maps[name] .. ", not an object."
      end
    end
    return nil
  end
  if scalar_maps[""] ~= nil then return check_map("", body) end
  for _, entry in ipairs(body.entries) do
    if scalar_maps[entry.key] ~= nil then
      local problem = check_map(entry.key, entry.node)
      if problem ~= nil then return problem end
    end
  end
  return nil
end

local function sorted_keys(set)
  local keys = {}
  for key, _ in pairs(set) do keys[#keys + 1] = key end
  table.sort(keys)
  return keys
end

-- REST requests only: everything a request can be refused for before the transcoder sees it, cheapest first.
local function check_rest_request(handle, headers, metadata)
  local path = headers:get(":path") or ""
  local max_url_bytes = metadata:get("max_url_bytes")
  if max_url_bytes ~= nil and #path > max_url_bytes then
    return refuse(handle, 414, "URI_TOO_LONG", "The URL is longer than " .. max_url_bytes .. " bytes.")
  end
  local route_path, query = path:match("^([^?]*)%??(.*)$")
  if not is_utf8(percent_decode(route_path)) or not is_utf8(percent_decode(query)) then
    return refuse(handle, 400, "INVALID_UTF8", "The URL's path and query must be UTF-8 once percent-decoded.")
  end

  -- The transcoder lets a query parameter override a path variable (/leads/a?leadId=b reads lead b).
  local path_variables = metadata:get("path_variables")
  if query ~= "" and path_variables ~= nil then
    local forbidden = {}
    for _, name in pairs(path_variables) do forbidden[name] = true end
    for pair in query:gmatch("[^&]+") do
      local name = url_decode(pair:match("^[^=]*"))
      if forbidden[name] then
        return refuse(handle, 400, "PATH_VARIABLE_IN_QUERY",
          "Query parameter '" .. name .. "' names a path variable; give it in the path only.")
      end
    end
  end

  local routes = metadata:get("routes")
  if routes == nil then return end
  local method = headers:get(":method") or ""
  local verbs, route = route_for(routes, path_segments(route_path), method)
  if route == nil then
    if next(verbs) == nil then return end  -- no such path: the transcoder answers 404
    local allow = table.concat(sorted_keys(verbs), ", ")
    return refuse(handle, 405, "METHOD_NOT_ALLOWED",
      "Method " .. method .. " is not allowed on " .. route_path:sub(1, 200) .. "; it serves " .. allow .. ".",
      { allow = allow })
  end

  local max_body_bytes = metadata:get("max_body_bytes")
  local declared = tonumber(headers:get("content-length") or "")
  if max_body_bytes ~= nil and declared ~= nil and declared > max_body_bytes then
    return refuse(handle, 413, "REQUEST_TOO_LARGE", "The request body is larger than " .. max_body_bytes .. " bytes.")
  end
  local content_type = headers:get("content-type")
  local json = content_type ~= nil and is_json(content_type)
  local scalar_maps = route.scalar_maps
  if json and (scalar_maps == nil or next(scalar_maps) == nil) then return end
  -- Read the body only when it matters: a body of another type, or JSON whose map values need a look.
  local body = request_body(handle, headers)
  if body == nil then return end
  if not json then
    local given = content_type and ("not " .. content_type:sub(1, 100)) or "and none was given"
    return refuse(handle, 415, "UNSUPPORTED_MEDIA_TYPE",
      "A request body must be JSON with Content-Type: application/json, " .. given .. ".")
  end
  local problem = misplaced_object(body:getBytes(0, body:length()), scalar_maps)
  if problem ~= nil then return refuse(handle, 400, "INVALID_ARGUMENT", problem) end
end

function envoy_on_request(request_handle)
  local headers = request_handle:headers()
  local grpc = is_grpc(headers:get("content-type"))
  drop_headers_grpc_cannot_carry(headers, grpc)
  if grpc then return end
  check_rest_request(request_handle, headers, request_handle:metadata())
end

function envoy_on_response(response_handle)
  local headers = response_handle:headers()
  local status = tonumber(headers:get(":status"))
  if status == nil or status < 400 or is_grpc(headers:get("content-type")) then return end
  local reason_header = headers:get(REASON_HEADER)
  headers:remove(REASON_HEADER)
  -- Buffers the whole error body: small, or at most what a replica's trailers held (the cluster's limit).
  local body = response_handle:body()
  if body == nil then return end
  local rewritten = rewrite(status, body:getBytes(0, body:length()), reason_header)
  body:setBytes(rewritten)
  headers = response_handle:headers()
  headers:replace("content-type", "application/json")
  headers:replace("content-length", tostring(#rewritten))
end
