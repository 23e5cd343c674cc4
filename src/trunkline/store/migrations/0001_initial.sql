-- Trunkline call store, version 1.
-- Runs inside one transaction as the owner role trunkline_owner with search_path = trunkline.
-- Every table holding tenant data has a tenant_id column, row-level security ENABLED and FORCED, and one
-- policy comparing tenant_id with the per-transaction setting trunkline.tenant_id. With no tenant set the
-- setting is NULL (or '' once a transaction has set and reset it), NULLIF turns '' into NULL, and
-- "tenant_id = NULL" is never true: zero rows.
-- The application role trunkline_app gets DML only; it owns nothing and cannot bypass RLS.

CREATE TABLE tenants (
    tenant_id    text PRIMARY KEY CHECK (tenant_id <> '' AND length(tenant_id) <= 128),
    display_name text NOT NULL DEFAULT '',
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE calls (
    id                uuid PRIMARY KEY,
    tenant_id         text NOT NULL REFERENCES tenants (tenant_id),
    direction         text NOT NULL CHECK (direction IN ('inbound', 'outbound')),
    from_number       text NOT NULL DEFAULT '',
    to_number         text NOT NULL DEFAULT '',
    sip_call_id       text NOT NULL DEFAULT '',
    codec             text,
    started_at        timestamptz NOT NULL,
    answered_at       timestamptz,
    ended_at          timestamptz,
    end_reason        text,
    packets_received  bigint NOT NULL DEFAULT 0 CHECK (packets_received >= 0),
    packets_sent      bigint NOT NULL DEFAULT 0 CHECK (packets_sent >= 0),
    packets_lost      bigint NOT NULL DEFAULT 0,
    packets_late      bigint NOT NULL DEFAULT 0 CHECK (packets_late >= 0),
    packets_discarded bigint NOT NULL DEFAULT 0 CHECK (packets_discarded >= 0),
    concealed_frames  bigint NOT NULL DEFAULT 0 CHECK (concealed_frames >= 0),
    jitter_mean_ms    double precision NOT NULL DEFAULT 0,
    jitter_max_ms     double precision NOT NULL DEFAULT 0,
    UNIQUE (tenant_id, id)
);
CREATE INDEX calls_tenant_started_idx ON calls (tenant_id, started_at DESC);

-- Children reference (tenant_id, call_id): a row can only hang off a call of its own tenant.
CREATE TABLE turns (
    id          uuid PRIMARY KEY,
    tenant_id   text NOT NULL,
    call_id     uuid NOT NULL,
    seq         integer NOT NULL,
    speaker     text NOT NULL CHECK (speaker IN ('caller', 'agent')),
    text        text NOT NULL,
    started_at  timestamptz NOT NULL,
    ended_at    timestamptz NOT NULL,
    latency_ms  jsonb NOT NULL DEFAULT '{}'::jsonb,
    interrupted boolean NOT NULL DEFAULT false,
    heard_text  text,
    FOREIGN KEY (tenant_id, call_id) REFERENCES calls (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX turns_call_idx ON turns (call_id, seq);

CREATE TABLE tool_calls (
    id          uuid PRIMARY KEY,
    tenant_id   text NOT NULL,
    call_id     uuid NOT NULL,
    turn_id     uuid,
    name        text NOT NULL,
    arguments   jsonb NOT NULL DEFAULT '{}'::jsonb,
    result      jsonb,
    status      text NOT NULL CHECK (status IN ('ok', 'error', 'timeout', 'cancelled')),
    started_at  timestamptz NOT NULL,
    duration_ms double precision NOT NULL CHECK (duration_ms >= 0),
    FOREIGN KEY (tenant_id, call_id) REFERENCES calls (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX tool_calls_call_idx ON tool_calls (call_id, started_at);

CREATE TABLE usage (
    id             uuid PRIMARY KEY,
    tenant_id      text NOT NULL,
    call_id        uuid NOT NULL,
    recorded_at    timestamptz NOT NULL,
    llm_tokens_in  bigint NOT NULL DEFAULT 0 CHECK (llm_tokens_in >= 0),
    llm_tokens_out bigint NOT NULL DEFAULT 0 CHECK (llm_tokens_out >= 0),
    asr_seconds    double precision NOT NULL DEFAULT 0 CHECK (asr_seconds >= 0),
    tts_characters bigint NOT NULL DEFAULT 0 CHECK (tts_characters >= 0),
    tts_seconds    double precision NOT NULL DEFAULT 0 CHECK (tts_seconds >= 0),
    tool_calls     integer NOT NULL DEFAULT 0 CHECK (tool_calls >= 0),
    minutes        double precision NOT NULL DEFAULT 0 CHECK (minutes >= 0),
    FOREIGN KEY (tenant_id, call_id) REFERENCES calls (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX usage_call_idx ON usage (call_id);

ALTER TABLE tenants ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenants FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tenants
    USING (tenant_id = NULLIF(current_setting('trunkline.tenant_id', true), ''))
    WITH CHECK (tenant_id = NULLIF(current_setting('trunkline.tenant_id', true), ''));

ALTER TABLE calls ENABLE ROW LEVEL SECURITY;
ALTER TABLE calls FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON calls
    USING (tenant_id = NULLIF(current_setting('trunkline.tenant_id', true), ''))
    WITH CHECK (tenant_id = NULLIF(current_setting('trunkline.tenant_id', true), ''));

ALTER TABLE turns ENABLE ROW LEVEL SECURITY;
ALTER TABLE turns FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON turns
    USING (tenant_id = NULLIF(current_setting('trunkline.tenant_id', true), ''))
    WITH CHECK (tenant_id = NULLIF(current_setting('trunkline.tenant_id', true), ''));

ALTER TABLE tool_calls ENABLE ROW LEVEL SECURITY;
ALTER TABLE tool_calls FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tool_calls
    USING (tenant_id = NULLIF(current_setting('trunkline.tenant_id', true), ''))
    WITH CHECK (tenant_id = NULLIF(current_setting('trunkline.tenant_id', true), ''));

ALTER TABLE usage ENABLE ROW LEVEL SECURITY;
ALTER TABLE usage FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON usage
    USING (tenant_id = NULLIF(current_setting('trunkline.tenant_id', true), ''))
    WITH CHECK (tenant_id = NULLIF(current_setting('trunkline.tenant_id', true), ''));

GRANT SELECT, INSERT, UPDATE, DELETE ON tenants, calls, turns, tool_calls, usage TO trunkline_app;
