-- What idalloc's database role may do (see the writer's grants.sql): its
-- own tables, nothing of the links. Applied after every migration run.
DO $grants$
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'tinyurl_idalloc') THEN
        GRANT SELECT, INSERT, UPDATE, DELETE ON
            idalloc_namespaces, idalloc_leases, idalloc_timeline
            TO tinyurl_idalloc;
        GRANT SELECT ON idalloc_schema_history TO tinyurl_idalloc;
    END IF;
END
$grants$;
