package cursor

// RevLess reports whether rev a is older than rev b. Revs are TIDs
// (atproto's timestamp identifiers): fixed-width and base32-sortable, so
// their order is byte order. This is the one rev order of pdsmux; the
// scripts use its Lua twin, luaRevLess (strcoll is not byte order).
func RevLess(a, b string) bool { return a < b }

// luaRevLess is RevLess for the scripts, prepended to each that compares
// revs.
const luaRevLess = `local function revLess(a, b)
  if a == b then return false end
  for i = 1, math.min(#a, #b) do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x < y end
  end
  return #a < #b
end
`
