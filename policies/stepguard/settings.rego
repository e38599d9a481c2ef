# The settings blocks of data.stepguard with their defaults (docs/policy.md,
# "Settings"), read once per decision.
package stepguard.policy.settings

import rego.v1

# The settings blocks of data.stepguard with their defaults, read once per
# decision. A block that is absent or not an object reads as {} (a wrong type
# is reported by validate.rego, and refused when the policy loads).
# (Each block is read by unification in a comprehension: reading
# data.stepguard as a whole would include this package, and regorus's VM does
# not fail a body on `x := <undefined>`.)
all := {
	"admin_roles": object.get(roles, "admin", []),
	"velocity_max": object.get(signals, "velocity_max", null),
	"raise_steps": object.get(signals, "raise_steps", 1),
	"trusted_devices": object.get(signals, "trusted_devices", []),
	"unknown_network_is_new": object.get(signals, "unknown_network_is_new", false),
	"max_token_lifetime": object.get(workloads, "max_token_lifetime", 300),
	"allowed_actors": object.get(delegation, "allowed_actors", {}),
	"break_glass_roles": object.get(break_glass_block, "roles", []),
	"break_glass_actions": object.get(break_glass_block, "actions", []),
	"min_justification_length": object.get(break_glass_block, "min_justification_length", 20),
	"break_glass_ttl": object.get(break_glass_block, "grant_ttl", 60),
	"max_clock_skew": object.get(reqs_block, "max_clock_skew", 60),
	"requirements": reqs_block,
} if {
	roles := array.concat([b | data.stepguard.roles = b; is_object(b)], [{}])[0]
	signals := array.concat([b | data.stepguard.signals = b; is_object(b)], [{}])[0]
	workloads := array.concat([b | data.stepguard.workloads = b; is_object(b)], [{}])[0]
	delegation := array.concat([b | data.stepguard.delegation = b; is_object(b)], [{}])[0]
	break_glass_block := array.concat([b | data.stepguard.break_glass = b; is_object(b)], [{}])[0]
	reqs_block := array.concat([b | data.stepguard.requirements = b; is_object(b)], [{}])[0]
}

