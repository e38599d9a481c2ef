# Unit tests for stepguard.authz, run with `stepguard policy test policies`
# (regorus) or `opa test policies/`. They use the shipped policies/data.json
# unless a test overrides a block of it (data.stepguard.requirements,
# .signals, .delegation, .break_glass, ...).
package stepguard.authz_test

import rego.v1

import data.stepguard.authz

# ===========================================================================
# Fixtures
# ===========================================================================

now := 1700000000

ladder := ["aal1", "aal2", "aal3"]

# alice signed in with aal2 (password + OTP) 100 seconds ago.
alice := {
	"kind": "human",
	"id": "alice",
	"issuer": "https://idp.bank.example",
	"acr": "aal2",
	"acr_rank": 1,
	"amr": ["pwd", "otp"],
	"auth_time": now - 100,
	"session_age": 100,
	"roles": ["customer"],
	"scopes": ["payments"],
	"client_id": "web",
	"sid": "s-1",
	"act": [],
	"workload": null,
	"claims": {"sub": "alice", "acr": "aal2"},
}

# human(changes) is alice with some fields changed.
human(changes) := object.union(alice, changes)

# A signed-in human whose session is `age` seconds old at level `acr`.
session(acr, age) := human({
	"acr": acr,
	"acr_rank": rank(acr),
	"auth_time": now - age,
	"session_age": age,
})

rank(acr) := [i | some i, a in ladder; a == acr][0]

payments_workload := {
	"kind": "workload",
	"id": "spiffe://bank.example/ns/batch/sa/payouts",
	"issuer": null,
	"acr": null,
	"acr_rank": -1,
	"amr": [],
	"auth_time": null,
	"session_age": null,
	"roles": [],
	"scopes": [],
	"client_id": null,
	"sid": null,
	"act": [],
	"workload": {"spiffe_id": "spiffe://bank.example/ns/batch/sa/payouts"},
	"claims": {},
}

anonymous := {
	"kind": "anonymous",
	"id": null,
	"issuer": null,
	"acr": null,
	"acr_rank": -1,
	"amr": [],
	"auth_time": null,
	"session_age": null,
	"roles": [],
	"scopes": [],
	"client_id": null,
	"sid": null,
	"act": [],
	"workload": null,
	"claims": {},
}

# action(name, changes): a reversible, unprivileged action without a value.
action(name, changes) := object.union(
	{
		"name": name,
		"risk": "medium",
		"reversible": true,
		"privileged": false,
		"value": null,
		"currency": null,
		"mode": "enforce",
	},
	changes,
)

transfer(value) := transfer_in(value, "EUR")

# A transfer of `value` in `currency` (an ISO 4217 code, or anything else).
transfer_in(value, currency) := action("payments.transfer", {"risk": "high", "value": value, "currency": currency})

approve := action("payments.approve", {"risk": "high"})

keys_export := action("keys.export", {"risk": "critical", "reversible": false, "privileged": true})

iam_escalate := action("iam.escalate", {"risk": "critical", "privileged": true})

email_change := action("profile.email_change", {})

# A transaction-bound grant obtained `age` seconds ago at level `acr`.
grant(acr, age, uses_left) := {
	"acr": acr,
	"acr_rank": rank(acr),
	"amr": ["pwd", "hwk"],
	"auth_time": now - age,
	"method": "oidc",
	"challenge_id": "ch-1",
	"issued_at": now - age,
	"uses_left": uses_left,
}

# request(act, subj, g): the ext_authz input stepguard builds.
request(act, subj, g) := {
	"attributes": {
		"source": {
			"address": {"socketAddress": {"address": "10.0.0.7", "portValue": 51234}},
			"principal": "spiffe://bank.example/ns/edge/sa/gateway",
		},
		"destination": {"address": {"socketAddress": {"address": "10.0.0.9", "portValue": 8080}}},
		"request": {"http": {
			"id": "req-1",
			"method": "POST",
			"headers": {"content-type": "application/json"},
			"path": "/v1/accounts/A1/transfers",
			"host": "api.bank.example",
			"scheme": "https",
			"protocol": "HTTP/1.1",
		}},
		"contextExtensions": {},
	},
	"parsed_path": ["v1", "accounts", "A1", "transfers"],
	"parsed_query": {},
	"parsed_body": {"amount": 100},
	"truncated_body": false,
	"version": {"encoding": "protojson", "ext_authz": "v3"},
	"stepguard": {
		"now": now,
		"acr_ladder": ladder,
		"action": act,
		"subject": subj,
		"transaction": {"digest": "k1:Zm9v", "key_id": "k1", "bound": {"path.account": "A1", "body.amount": "100"}},
		"grant": g,
		"context": known_context,
	},
}

# A request from a network alice used before, at a normal pace, with no
# device posture reported and no break-glass justification.
known_context := {
	"source_ip": "203.0.113.5",
	"peer_principal": null,
	"network": "203.0.113.0/24",
	"new_network": false,
	"velocity": {"window_secs": 3600, "count": 1},
	"device_trust": null,
	"break_glass_justification": null,
}

# with_context(req, changes): req with some context fields changed.
with_context(req, changes) := object.union(req, {"stepguard": {"context": changes}})

# An administrator whose session is `age` seconds old at level `acr`.
admin_session(acr, age) := object.union(session(acr, age), {"roles": ["customer", "admin"]})

# Claims of a transaction token for the fixture's transfer (A1, 100), minted
# 10 s ago for 60 s.
txn_claims := {
	"sub": "spiffe://bank.example/ns/batch/sa/payouts",
	"txn": "txn-7c1d",
	"iat": now - 10,
	"exp": now + 50,
	"tctx": {"action": "payments.transfer", "fields": {"path.account": "A1", "body.amount": "100"}},
}

# The payouts workload presenting a token with `claims`.
txn_workload(claims) := object.union(payments_workload, {"claims": claims})

idp := "https://idp.bank.example"

bob_may_export := {"allowed_actors": {"keys.export": [{"sub": "bob", "iss": idp}]}}

# alice's token, used by `chain` (outermost actor first).
delegated(chain) := human({"act": chain})

# An on-call engineer holding the break-glass role.
oncall(acr, age) := object.union(session(acr, age), {"id": "oncall-1", "roles": ["sre", "break-glass"]})

justification := "INC-4711: HSM key rotation failed, restoring signing"

# ===========================================================================
# Deny: subject kinds
# ===========================================================================

test_anonymous_is_denied_401 if {
	req := request(transfer(500), anonymous, null)
	d := authz.decision with input as req
	d == {
		"result": "deny",
		"reason": "authentication_required",
		"reasons": ["authentication_required"],
		"status": 401,
	}
}

test_workload_is_denied_never_stepped_up if {
	# Even with a (misrouted) grant, a workload gets no human prompt.
	req := request(approve, payments_workload, grant("aal3", 1, 1))
	d := authz.decision with input as req
	d == {
		"result": "deny",
		"reason": "workload_requires_transaction_token",
		"reasons": ["workload_requires_transaction_token"],
		"status": 403,
	}
}

# ===========================================================================
# Dry run: the policy decides the same in shadow mode
# ===========================================================================

test_shadow_mode_decides_like_enforce if {
	cases := [
		request(transfer(500), session("aal2", 10), null),
		request(transfer(25000), session("aal2", 10), null),
		request(approve, session("aal2", 10), grant("aal2", 1, 1)),
		with_context(request(transfer(500), session("aal2", 10), null), {"new_network": true}),
		request(transfer(100), txn_workload(object.union(txn_claims, {"txn": ""})), null),
	]
	every req in cases {
		shadow := object.union(req, {"stepguard": {"action": {"mode": "shadow"}}})
		enforced := authz.decision with input as req
		shadowed := authz.decision with input as shadow
		shadowed == enforced
	}
}
