# METADATA
# title: stepguard helpers
# description: |
#   Pure helper functions used by stepguard.authz. Nothing in this package
#   reads input or data; every helper is a function of its arguments, so the
#   helpers are easy to reuse in custom policies and to unit test.
package stepguard.lib

import rego.v1

# ---------------------------------------------------------------------------
# Authentication assurance (acr) ladder
#
# The ladder is an ordered list of acr values, weakest first, e.g.
# ["aal1", "aal2", "aal3"]. stepguard passes it as input.stepguard.acr_ladder.
# ---------------------------------------------------------------------------

# valid_ladder(ladder) holds for a non-empty list of distinct strings.
valid_ladder(ladder) if {
	is_array(ladder)
	count(ladder) > 0
	every a in ladder {
		is_string(a)
	}
	count({a | some a in ladder}) == count(ladder)
}

# on_ladder(ladder, acr) holds when acr is one of the ladder's values.
on_ladder(ladder, acr) if {
	is_array(ladder)
	acr in ladder
}

# rank(ladder, acr) is the index of acr on the ladder (0 = weakest).
# Undefined when acr is not on the ladder. Ties (a malformed ladder with
# duplicates) resolve to the first occurrence instead of raising a conflict.
rank(ladder, acr) := [i | some i, a in ladder; a == acr][0] if is_array(ladder)

# acr_values(ladder, acr) is acr followed by every stronger acr on the ladder,
# in ladder order: the preference list sent as OIDC acr_values.
#
#   acr_values(["aal1", "aal2", "aal3"], "aal2") == ["aal2", "aal3"]
acr_values(ladder, acr) := array.slice(ladder, rank(ladder, acr), count(ladder))

# ---------------------------------------------------------------------------
# Value checks
# ---------------------------------------------------------------------------

# is_integer(x) holds for numbers without a fractional part.
is_integer(x) if {
	is_number(x)
	floor(x) == x
}

# is_duration(x) holds for a whole, non-negative number of seconds.
is_duration(x) if {
	is_integer(x)
	x >= 0
}

# is_positive_duration(x) holds for a whole number of seconds > 0.
is_positive_duration(x) if {
	is_integer(x)
	x > 0
}

# is_currency_code(x) holds for an upper-case 3-letter code such as an ISO 4217
# currency code ("EUR", "JPY"). (No regex: regorus without its regex cache
# compiles the pattern on every call.)
is_currency_code(x) if {
	is_string(x)
	count(x) == 3
	trim(x, "ABCDEFGHIJKLMNOPQRSTUVWXYZ") == ""
}

# is_boolean_or_absent(obj, key) holds when obj[key] is missing or a boolean.
is_boolean_or_absent(obj, key) if {
	is_object(obj)
	is_boolean(object.get(obj, key, false))
}

# is_string_list(x) holds for a list (possibly empty) of strings.
is_string_list(x) if {
	is_array(x)
	every s in x {
		is_string(s)
	}
}

# any_in(values, allowed) holds when some element of the list values is also
# an element of the list allowed. False (never an error) for non-lists.
any_in(values, allowed) if {
	is_array(values)
	is_array(allowed)
	some v in values
	some a in allowed
	v == a
}

# raise_rank(rank, steps, top) is rank raised by steps, capped at top (the
# index of the strongest acr on the ladder).
#
#   raise_rank(1, 1, 2) == 2; raise_rank(2, 1, 2) == 2
raise_rank(rank, steps, top) := min({rank + steps, top})

# text_length(s) is the number of characters of s without leading and
# trailing white space; 0 for anything that is not a string.
text_length(s) := count(trim_space(s)) if is_string(s)

text_length(s) := 0 if not is_string(s)

# has_key(obj, key) holds when obj has key, whatever its value (null and
# false included).
has_key(obj, key) if {
	is_object(obj)
	obj[key] = _
}

# within(age, max_age, skew) holds when an age in seconds is at most max_age,
# and not further in the future than the tolerated clock skew (an auth_time
# far ahead of our clock is odd, so it never counts as fresh).
within(age, max_age, skew) if {
	is_number(age)
	is_number(max_age)
	is_number(skew)
	age <= max_age
	age >= 0 - skew
}
