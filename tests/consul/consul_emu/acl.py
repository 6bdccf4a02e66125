"""ACL tokens and rules: Consul's exact-then-longest-prefix rule lookup per resource.

A token's rules are consulted first; when no rule matches, the agent's default policy
decides. The anonymous token (used when a request carries no token) has no rules unless
the test gives it some through the control API.
"""

import re
import uuid

from .errors import HTTPError
from .params import go_quote

ANONYMOUS_SECRET = "anonymous"
ANONYMOUS_ACCESSOR = "00000000-0000-0000-0000-000000000002"
RESOURCES = ("service", "node", "agent", "key", "session", "query", "event", "operator")
_LEVELS = {"deny": 0, "read": 1, "list": 1, "write": 2}
_HCL_RULE = re.compile(r'(\w+)\s+"([^"]*)"\s*\{\s*policy\s*=\s*"(\w+)"\s*\}')


class RuleError(ValueError):
    """Rules the control API cannot accept; the message says why."""


def _policy_level(resource, name, value):
    if isinstance(value, dict):
        value = value.get("policy", value.get("Policy"))
    if not isinstance(value, str) or value not in _LEVELS:
        raise RuleError("%s %r: policy must be deny, read or write" % (resource, name))
    return _LEVELS[value]


class Rules:
    """Parsed rules: exact and prefix policies per resource."""

    def __init__(self, spec=None):
        self.exact = {}     # resource -> {name: level}
        self.prefix = {}    # resource -> {prefix: level}
        if isinstance(spec, str):
            spec = self._from_hcl(spec)
        for key, entries in (spec or {}).items():
            self._add(key, entries)

    @staticmethod
    def _from_hcl(text):
        parsed = {}
        for resource, name, policy in _HCL_RULE.findall(text):
            parsed.setdefault(resource, {})[name] = policy
        return parsed

    def _add(self, key, entries):
        is_prefix = key.endswith("_prefix")
        resource = key[:-len("_prefix")] if is_prefix else key
        if resource not in RESOURCES:
            raise RuleError("unknown rule resource %r" % key)
        if isinstance(entries, str):  # "operator": "read" style
            entries = {"": entries}
            is_prefix = True
        if not isinstance(entries, dict):
            raise RuleError("%s: expected an object of name -> policy" % key)
        table = self.prefix if is_prefix else self.exact
        for name, value in entries.items():
            table.setdefault(resource, {})[name] = _policy_level(key, name, value)

    def level(self, resource, name):
        """The matching rule's level, or None when no rule covers name."""
        exact = self.exact.get(resource, {})
        if name in exact:
            return exact[name]
        best, best_len = None, -1
        for prefix, level in self.prefix.get(resource, {}).items():
            if name.startswith(prefix) and len(prefix) > best_len:
                best, best_len = level, len(prefix)
        return best


class Token:
    """An ACL token the emulator knows."""

    def __init__(self, secret, accessor=None, rules=None, management=False, description=""):
        self.secret = secret                          # SecretID clients send
        self.accessor = accessor or str(uuid.uuid4())  # AccessorID named in denials
        self.rules_spec = rules                       # rules as given, for GET /_emu/acl
        self.rules = Rules(rules)                     # parsed rules
        self.management = management                  # global-management: allowed everything
        self.description = description                # free text

    def to_json(self):
        return {"SecretID": self.secret, "AccessorID": self.accessor,
                "Description": self.description, "Rules": self.rules_spec,
                "Management": self.management}


class Authorizer:
    """Decisions for one resolved token."""

    def __init__(self, token=None, default_allow=True):
        self.token = token                  # None when ACLs are disabled
        self.default_allow = default_allow  # the agent's acl.default_policy

    def allowed(self, resource, name, access):
        if self.token is None or self.token.management:
            return True
        level = self.token.rules.level(resource, name)
        if level is None:
            return self.default_allow
        return level >= _LEVELS[access]

    def require(self, resource, name, access):
        """Raise Consul's 403 unless the token may `access` (read|write) `resource` name."""
        if self.allowed(resource, name, access):
            return
        raise HTTPError(403, "Permission denied: token with AccessorID '%s' lacks permission "
                        "'%s:%s' on %s" % (self.token.accessor, resource, access,
                                           go_quote(name)))

    @property
    def anonymous(self):
        return self.token is None or self.token.secret == ANONYMOUS_SECRET


class ACL:
    """Token store plus the agent-wide default policy."""

    def __init__(self, default_policy=None, master_token=None):
        self.default_policy = default_policy  # None: ACLs disabled; "allow" or "deny"
        self.master_token = master_token
        self.tokens = {}
        self.reset()

    def reset(self):
        self.tokens = {ANONYMOUS_SECRET: Token(ANONYMOUS_SECRET, ANONYMOUS_ACCESSOR,
                                               description="Anonymous Token")}
        if self.master_token:
            self.tokens[self.master_token] = Token(self.master_token, management=True,
                                                   description="Initial Management Token")

    @property
    def enabled(self):
        return self.default_policy is not None

    def header_policy(self):
        """Value of X-Consul-Default-ACL-Policy; Consul sends "allow" when ACLs are off."""
        return self.default_policy or "allow"

    def resolve(self, secret):
        """Authorizer for a request's token ("" means anonymous); unknown → 403."""
        if not self.enabled:
            return Authorizer(None)
        token = self.tokens.get(secret or ANONYMOUS_SECRET)
        if token is None:
            raise HTTPError(403, "ACL not found")
        return Authorizer(token, self.default_policy == "allow")

    def set_token(self, spec):
        """Create or replace a token from a control-API JSON object."""
        secret = spec.get("SecretID") or spec.get("secret")
        if not isinstance(secret, str) or not secret:
            raise RuleError("SecretID is required")
        token = Token(secret, spec.get("AccessorID"), spec.get("Rules"),
                      bool(spec.get("Management")), spec.get("Description", ""))
        self.tokens[secret] = token
        return token


def request_token(params, headers):
    """The token a request carries, with Consul's precedence: ?token, X-Consul-Token, Bearer."""
    values = params.get("token")
    if values and values[0]:
        return values[0]
    header = headers.get("X-Consul-Token")
    if header:
        return header
    auth = headers.get("Authorization")
    if auth:
        parts = auth.split(" ")
        if len(parts) > 1 and parts[0].lower() == "bearer":
            return " ".join(parts[1:]).strip().split(" ")[0].strip()
    return ""
