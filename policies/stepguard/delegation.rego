# Delegation (RFC 8693 "act") and shared accounts.
#
# subject.act is the delegation chain, outermost (current) actor first. The
# outermost actor is accountable. When a chain is present and the action is
# priv, or listed in delegation.allowed_actors, that actor must be
# listed in delegation.allowed_actors[action] as {"sub", "iss"}. An actor
# without its own iss is in the namespace of the token's issuer. The whole
# chain stays in the input, so evidence records it.
#
# A shared account may only perform privileged actions through a chain that
# names the individual actor.
package stepguard.policy.delegation

import rego.v1


# The deny reasons about who is acting, in priority order, for any subject.
denies := array.concat(shared, delegated) if {
	s := input.stepguard
	subj := s.subject
	act := s.action
	cfg := data.stepguard.policy.settings.all
	chain := [a | is_array(subj.act); some a in subj.act]
	reqs := cfg.requirements
	entry_data := object.get(object.get(reqs, "actions", {}), act.name, object.get(reqs, "default", null))
	priv := {1 | act.privileged == true} | {2 | entry_data.privileged == true}
	shared := [code |
		subj.claims.shared_account == true
		count(chain) == 0
		count(priv) > 0
		code := "shared_account_without_actor"
	]
	allowed := cfg.allowed_actors
	enforced := {1 | count(chain) > 0; count(priv) > 0} | {2 |
		count(chain) > 0
		is_object(allowed)
		allowed[act.name] = _
	}
	# The accountable (outermost) actor; an actor without its own iss is in the
	# namespace of the token's issuer.
	actor := array.concat([a | some a in chain; is_object(a)], [{}])[0]
	actor_sub := object.get(actor, "sub", null)
	actor_iss := object.get(actor, "iss", null)
	issuer := array.concat([actor_iss | is_string(actor_iss)], [object.get(subj, "issuer", null)])[0]
	entries := array.concat([e | is_object(allowed); e := object.get(allowed, act.name, null)], [null])[0]
	accepted := [1 |
		count(enforced) > 0
		is_object(chain[0])
		is_string(actor_sub)
		actor_sub != ""
		is_string(issuer)
		is_array(entries)
		some entry in entries
		is_object(entry)
		entry.sub == actor_sub
		entry.iss == issuer
	]
	delegated := [code |
		count(enforced) > 0
		count(accepted) == 0
		code := "delegation_actor_not_allowed"
	]
}
