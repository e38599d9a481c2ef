# Break-glass: a subject with a break-glass role performing one of the
# break-glass actions gets emergency access only as a high-assurance, audited
# event: a written justification (at least min_justification_length
# characters, surrounding white space not counted), the top of the acr ladder,
# max_age 0, and a short single-use grant. Every decision lists "break_glass"
# and carries severity "high". Break-glass never changes anything for an
# action that is not listed.
package stepguard.policy.break_glass

import rego.v1


# {} for an ordinary request; {"break_glass"} for a break-glass request, plus
# "justified" when its justification is long enough.
marks := {code | count(request) > 0; code := "break_glass"} | {code |
	count(request) > 0
	count(justified) > 0
	code := "justified"
} if {
	s := input.stepguard
	cfg := data.stepguard.policy.settings.all
	request := [1 |
		s.subject.kind == "human"
		s.action.name in cfg.break_glass_actions
		some role in s.subject.roles
		role in cfg.break_glass_roles
	]
	justified := [1 |
		is_string(s.context.break_glass_justification)
		is_number(cfg.min_justification_length)
		count(trim_space(s.context.break_glass_justification)) >= cfg.min_justification_length
	]
}

# For explaining a decision (`stepguard check`); not on the decision's path.
active if "break_glass" in marks
