"""The planted secret shapes: one row per shape, shared by the table-driven redaction test and the
corpus tests that plant every shape through `capsule run`, `capsule agents` and `capsule env`.

Each row: (id, the rule of capsule/rules/secrets/shapes.toml it exercises, an argv carrying it, the
secret). Values are built here from filler, never real credentials. The secret is distinct per row, so
a leak is attributed to its shape.
"""

from __future__ import annotations


def _fill(n: int, seed: str, alphabet: str = "aB3dE5gH7jK9mN2pQ4sT6vW8yZ") -> str:
    out = seed
    i = 0
    while len(out) < n:
        out += alphabet[(i * 7 + len(seed)) % len(alphabet)]
        i += 1
    return out[:n]


def _hex(n: int, seed: str) -> str:
    return _fill(n, seed, "0a1b2c3d4e5f6789")


AWS_ID = "AKIA" + _fill(16, "Q", "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJwbGFudGVkMSJ9." + _fill(20, "sig")
PEM_BODY = "MIIEpAIBAAKCAQEAplanted" + _fill(40, "pem")

# (id, rule, argv, secret)
SHAPES: list[tuple[str, str, list[str], str]] = [
    ("openai", "openai-anthropic", ["x", "sk-proj-" + _fill(32, "oai")], "sk-proj-" + _fill(32, "oai")),
    (
        "anthropic",
        "openai-anthropic",
        ["x", "sk-ant-api03-" + _fill(32, "ant")],
        "sk-ant-api03-" + _fill(32, "ant"),
    ),
    ("github-classic", "github", ["x", "ghp_" + _fill(36, "gh1")], "ghp_" + _fill(36, "gh1")),
    ("github-app", "github", ["x", "ghs_" + _fill(36, "gh2")], "ghs_" + _fill(36, "gh2")),
    (
        "github-fine-grained",
        "github-fine-grained",
        ["x", "github_pat_11" + _fill(60, "fg")],
        "github_pat_11" + _fill(60, "fg"),
    ),
    ("gitlab-pat", "gitlab", ["x", "glpat-" + _fill(20, "gl")], "glpat-" + _fill(20, "gl")),
    ("grafana", "grafana", ["x", "glsa_" + _fill(32, "gr")], "glsa_" + _fill(32, "gr")),
    (
        "slack-bot",
        "slack-token",
        ["x", "xoxb-1234-5678-" + _fill(24, "sb")],
        "xoxb-1234-5678-" + _fill(24, "sb"),
    ),
    ("slack-app", "slack-app-token", ["x", "xapp-1-A01-" + _fill(20, "sa")], "xapp-1-A01-" + _fill(20, "sa")),
    (
        "slack-webhook",
        "slack-webhook",
        ["curl", "https://hooks.slack.com/services/T0PLANT/B0PLANT/" + _fill(24, "wh")],
        "T0PLANT/B0PLANT/" + _fill(24, "wh"),
    ),
    (
        "discord-webhook",
        "discord-webhook",
        ["curl", "https://discord.com/api/webhooks/123456/" + _fill(30, "dw")],
        "123456/" + _fill(30, "dw"),
    ),
    ("aws-access-key-id", "aws-access-key-id", ["x", AWS_ID], AWS_ID),
    ("google-api-key", "google-api-key", ["x", "AIza" + _fill(35, "gk")], "AIza" + _fill(35, "gk")),
    ("google-oauth-token", "google-oauth-token", ["x", "ya29." + _fill(40, "ya")], "ya29." + _fill(40, "ya")),
    (
        "google-client-secret",
        "google-oauth-client-secret",
        ["x", "GOCSPX-" + _fill(28, "gc")],
        "GOCSPX-" + _fill(28, "gc"),
    ),
    ("stripe-live", "stripe", ["x", "sk_live_" + _fill(24, "sl")], "sk_live_" + _fill(24, "sl")),
    ("stripe-restricted", "stripe", ["x", "rk_live_" + _fill(24, "rl")], "rk_live_" + _fill(24, "rl")),
    (
        "stripe-webhook",
        "stripe-webhook-secret",
        ["x", "whsec_" + _fill(32, "ws")],
        "whsec_" + _fill(32, "ws"),
    ),
    ("npm", "npm", ["npm", "npm_" + _fill(36, "np")], "npm_" + _fill(36, "np")),
    (
        "pypi",
        "pypi",
        ["twine", "pypi-AgEIcHlwaS5vcmc" + _fill(40, "py")],
        "pypi-AgEIcHlwaS5vcmc" + _fill(40, "py"),
    ),
    ("hugging-face", "hugging-face", ["x", "hf_" + _fill(34, "hf")], "hf_" + _fill(34, "hf")),
    ("jwt", "jwt", ["x", JWT], JWT),
    (
        "sendgrid",
        "sendgrid",
        ["x", "SG." + _fill(22, "sg") + "." + _fill(43, "sh")],
        "SG." + _fill(22, "sg") + "." + _fill(43, "sh"),
    ),
    ("digitalocean", "digitalocean", ["x", "dop_v1_" + _hex(64, "d0")], "dop_v1_" + _hex(64, "d0")),
    ("shopify", "shopify", ["x", "shpat_" + _hex(32, "5a")], "shpat_" + _hex(32, "5a")),
    ("vault", "hashicorp-vault", ["x", "hvs." + _fill(30, "hv")], "hvs." + _fill(30, "hv")),
    (
        "terraform-cloud",
        "terraform-cloud",
        ["x", _fill(14, "tf") + ".atlasv1." + _fill(64, "at")],
        _fill(14, "tf") + ".atlasv1." + _fill(64, "at"),
    ),
    (
        "age",
        "age-secret-key",
        ["x", "AGE-SECRET-KEY-1" + _fill(58, "Q", "QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L")],
        "AGE-SECRET-KEY-1" + _fill(58, "Q", "QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L"),
    ),
    ("databricks", "databricks", ["x", "dapi" + _hex(32, "9")], "dapi" + _hex(32, "9")),
    (
        "telegram-bot",
        "telegram-bot",
        ["x", "123456789:AA" + _fill(33, "tg")],
        "123456789:AA" + _fill(33, "tg"),
    ),
    ("linear", "linear", ["x", "lin_api_" + _fill(40, "li")], "lin_api_" + _fill(40, "li")),
    (
        "postman",
        "postman",
        ["x", "PMAK-" + _hex(24, "a") + "-" + _hex(34, "b")],
        "PMAK-" + _hex(24, "a") + "-" + _hex(34, "b"),
    ),
    ("sentry", "sentry", ["x", "sntrys_" + _fill(40, "se")], "sntrys_" + _fill(40, "se")),
    ("groq", "groq", ["x", "gsk_" + _fill(48, "gq")], "gsk_" + _fill(48, "gq")),
    ("replicate", "replicate", ["x", "r8_" + _fill(36, "rp")], "r8_" + _fill(36, "rp")),
    ("xai", "xai", ["x", "xai-" + _fill(48, "xa")], "xai-" + _fill(48, "xa")),
    ("pulumi", "pulumi", ["x", "pul-" + _hex(40, "c")], "pul-" + _hex(40, "c")),
    ("doppler", "doppler", ["x", "dp.pt." + _fill(43, "dp")], "dp.pt." + _fill(43, "dp")),
    ("square", "square", ["x", "sq0atp-" + _fill(22, "sq")], "sq0atp-" + _fill(22, "sq")),
    ("atlassian", "atlassian", ["x", "ATATT3" + _fill(120, "xF")], "ATATT3" + _fill(120, "xF")),
    ("mailgun", "mailgun", ["x", "key-" + _hex(32, "7")], "key-" + _hex(32, "7")),
    (
        "pem-private-key",
        "pem-private-key",
        ["x", f"-----BEGIN RSA PRIVATE KEY-----\n{PEM_BODY}\n-----END RSA PRIVATE KEY-----"],
        f"\n{PEM_BODY}\n",
    ),
    (
        "pem-openssh",
        "pem-private-key",
        [
            "x",
            "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktplanted\n-----END OPENSSH PRIVATE KEY-----",
        ],
        "\nb3BlbnNzaC1rZXktplanted\n",
    ),
    (
        "authorization-bearer",
        "authorization-header",
        ["curl", "-H", "Authorization: Bearer planted-bearer-1"],
        "planted-bearer-1",
    ),
    (
        "authorization-basic",
        "authorization-header",
        ["curl", "-H", "authorization: Basic cGxhbnRlZDpiYXNpYw=="],
        "cGxhbnRlZDpiYXNpYw==",
    ),
    ("bare-bearer", "bearer", ["curl", "-H", "X-Upstream: Bearer planted-bearer-2"], "planted-bearer-2"),
    (
        "api-key-header",
        "name-colon-value",
        ["curl", "-H", "X-Api-Key: planted-header-key"],
        "planted-header-key",
    ),
    (
        "private-token-header",
        "name-colon-value",
        ["curl", "-H", "PRIVATE-TOKEN: planted-private-token"],
        "planted-private-token",
    ),
    (
        "json-password",
        "name-colon-value",
        ["curl", "-d", '{"user": "bob", "password": "planted-json-pw"}'],
        "planted-json-pw",
    ),
    ("flag-equals", "name-equals-value", ["x", "--token=planted-flag-token"], "planted-flag-token"),
    ("password-equals", "name-equals-value", ["x", "--password=planted-flag-pw"], "planted-flag-pw"),
    ("api-key-equals", "name-equals-value", ["x", "--api-key=planted-api-key"], "planted-api-key"),
    (
        "env-token",
        "name-equals-value",
        ["env", "GITHUB_TOKEN=planted-env-token", "true"],
        "planted-env-token",
    ),
    (
        "env-secret-access-key",
        "name-equals-value",
        ["env", "AWS_SECRET_ACCESS_KEY=planted/aws+secret", "true"],
        "planted/aws+secret",
    ),
    ("env-db-pass", "name-equals-value", ["env", "DB_PASS=planted-db-pass", "true"], "planted-db-pass"),
    (
        "env-mysql-pwd",
        "name-equals-value",
        ["env", "MYSQL_PWD=planted-mysql-pwd", "true"],
        "planted-mysql-pwd",
    ),
    (
        "env-stripe-key",
        "name-equals-value",
        ["env", "STRIPE_KEY=planted-stripe-key", "true"],
        "planted-stripe-key",
    ),
    (
        "npmrc-auth-token",
        "name-equals-value",
        ["npm", "config", "set", "//registry.npmjs.org/:_authToken=planted-npm-auth"],
        "planted-npm-auth",
    ),
    (
        "query-access-token",
        "name-equals-value",
        ["curl", "https://api.example.test/v1?access_token=planted-query-token&x=1"],
        "planted-query-token",
    ),
    ("flag-then-value", "flag-then-argument", ["psql", "--password", "planted-next-arg"], "planted-next-arg"),
    (
        "client-secret-then-value",
        "flag-then-argument",
        ["x", "--client-secret", "planted-next-secret"],
        "planted-next-secret",
    ),
    (
        "sh-flag-space-value",
        "flag-space-value",
        ["sh", "-c", "true --password planted-sh-space; true"],
        "planted-sh-space",
    ),
    ("mysql-p", "mysql-p", ["mysql", "-uroot", "-pplanted-mysql-p", "db"], "planted-mysql-p"),
    (
        "mysql-p-in-sh",
        "mysql-p",
        ["sh", "-c", "mysqldump -u root -pplanted-dump-p db > /dev/null"],
        "planted-dump-p",
    ),
    ("sshpass", "sshpass-p", ["sshpass", "-p", "planted-sshpass", "ssh", "host"], "planted-sshpass"),
    ("curl-u", "curl-user", ["curl", "-u", "bob:planted-curl-u", "https://example.test"], "planted-curl-u"),
    (
        "curl-user-in-sh",
        "curl-user",
        ["sh", "-c", "curl --user alice:planted-curl-user https://example.test"],
        "planted-curl-user",
    ),
    (
        "postgres-url",
        "url-credentials",
        ["psql", "postgresql://app:planted-pg-pw@db.example.test:5432/app"],
        "planted-pg-pw",
    ),
    (
        "mongodb-url",
        "url-credentials",
        ["x", "mongodb+srv://root:planted-mongo-pw@cluster0.example.test/db"],
        "planted-mongo-pw",
    ),
    (
        "redis-url-no-user",
        "url-credentials",
        ["x", "redis://:planted-redis-pw@cache:6379/0"],
        "planted-redis-pw",
    ),
    (
        "git-https-token",
        "url-credentials",
        ["git", "clone", "https://x-access-token:planted-git-cred@github.com/o/r.git"],
        "planted-git-cred",
    ),
    (
        "azure-sas-sig",
        "url-signature",
        ["curl", "https://acct.blob.core.windows.net/c/b?sv=2022-11-02&sp=r&sig=planted%2Bsas%3D"],
        "planted%2Bsas%3D",
    ),
    (
        "s3-presigned",
        "url-signature",
        ["curl", "https://b.s3.amazonaws.com/k?X-Amz-Date=1&X-Amz-Signature=plantedabc123def"],
        "plantedabc123def",
    ),
    (
        "azure-account-key",
        "name-equals-value",
        ["x", "DefaultEndpointsProtocol=https;AccountName=a;AccountKey=planted+azure/key==;EndpointSuffix=x"],
        "planted+azure/key==",
    ),
    (
        "azure-shared-access-signature",
        "name-equals-value",
        ["x", "--shared_access_signature=plantedsharedsig42"],
        "plantedsharedsig42",
    ),
]
