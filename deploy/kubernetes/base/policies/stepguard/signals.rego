# Context signals that raise a human's requirement (see requirement.rego).
# Each adds its own reason code; together they raise it once (raise_steps up
# the ladder, capped at the top, and max_age 0). A signal that was not
# measured (absent or null) never raises anything.
package stepguard.policy.signals

import rego.v1


fired := (new_network | high_velocity) | untrusted_device if {
	s := input.stepguard
	cfg := data.stepguard.policy.settings.all

	# true: approved from other networks, never from this one. null: no source
	# address, or no baseline yet; judged new only with unknown_network_is_new.
	new_network := {code | s.context.new_network == true; code := "new_network"} | {code |
		cfg.unknown_network_is_new == true
		count([1 | is_boolean(s.context.new_network)]) == 0
		code := "new_network"
	}

	# More sensitive requests by this subject in the window than velocity_max.
	high_velocity := {code |
		is_number(cfg.velocity_max)
		is_number(s.context.velocity.count)
		s.context.velocity.count > cfg.velocity_max
		code := "high_velocity"
	}

	# A posture that is not listed as trusted is untrusted, including an empty
	# or unknown value.
	untrusted_device := {code |
		is_string(s.context.device_trust)
		not s.context.device_trust in cfg.trusted_devices
		code := "untrusted_device"
	}
}
