-- depends: 0001_runtime_tables
-- version columns hold "<UTC timestamp>/<event id>": byte order ("C") is time order, ties by id.
CREATE TABLE user_settings (
    user_id                uuid PRIMARY KEY,
    weight_value           numeric(7, 2) NOT NULL,
    weight_unit            text          NOT NULL CHECK (weight_unit IN ('kg', 'lb')),
    age                    smallint      NOT NULL,
    training_days_per_week smallint      NOT NULL,
    data                   jsonb         NOT NULL,
    event_id               uuid          NOT NULL,
    event_timestamp        timestamptz   NOT NULL,
    version                text COLLATE "C" NOT NULL,
    updated_at             timestamptz   NOT NULL DEFAULT now()
);

-- app settings are patches: each top-level key keeps the version of the event that set it.
CREATE TABLE app_settings (
    user_id    uuid PRIMARY KEY,
    settings   jsonb       NOT NULL DEFAULT '{}',
    versions   jsonb       NOT NULL DEFAULT '{}',
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE FUNCTION newer_keys(versions jsonb, patch jsonb, patch_version text)
RETURNS SETOF text LANGUAGE sql IMMUTABLE AS $$
    SELECT k FROM jsonb_object_keys(patch) AS k
    WHERE versions->>k IS NULL OR (versions->>k) COLLATE "C" < patch_version COLLATE "C"
$$;

CREATE FUNCTION merge_newer(current jsonb, versions jsonb, patch jsonb, patch_version text)
RETURNS jsonb LANGUAGE sql IMMUTABLE AS $$
    SELECT current || COALESCE(jsonb_object_agg(k, patch->k), '{}'::jsonb)
    FROM newer_keys(versions, patch, patch_version) AS k
$$;

CREATE FUNCTION merge_versions(versions jsonb, patch jsonb, patch_version text)
RETURNS jsonb LANGUAGE sql IMMUTABLE AS $$
    SELECT versions || COALESCE(jsonb_object_agg(k, to_jsonb(patch_version)), '{}'::jsonb)
    FROM newer_keys(versions, patch, patch_version) AS k
$$;
