# Threadline's database roles (docs/operations.md, "Database roles"), made once by the postgres
# image's entrypoint when it initialises an empty data folder (it sources *.sh files in
# /docker-entrypoint-initdb.d/ after creating POSTGRES_DB as the superuser POSTGRES_USER):
#
#   DB_OWNER     the projectors and migrations: owns the database (and so its public schema),
#                creates the projection schemas and the key store's table (the projector at
#                start); no superuser, no CREATEDB, no CREATEROLE
#   DB_READER    the read API: CONNECT, USAGE on the schemas and SELECT on the tables and views
#                DB_OWNER creates, now and later, but not the key store (schema privacy); nothing else
#   DB_KEYSTORE  the gateway and the stream worker, which seal (docs/privacy.md): CONNECT, USAGE on
#                schema privacy and SELECT, INSERT on the tables DB_OWNER creates there
#                (privacy.data_keys); nothing else: no read model, no update or delete (only
#                erasure, as DB_OWNER, destroys keys), no DDL
#
# Passwords come from the environment (DB_OWNER_PASSWORD, DB_READER_PASSWORD,
# DB_KEYSTORE_PASSWORD) as psql variables, never spliced into the SQL text. The same file is
# deploy/k8s/overlays/dev/postgres-roles.sh (tests/deploy check that the two are equal).
psql -v ON_ERROR_STOP=1 --no-psqlrc --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  -v db="$POSTGRES_DB" \
  -v owner="${DB_OWNER:-threadline}" -v owner_password="${DB_OWNER_PASSWORD:?DB_OWNER_PASSWORD is not set}" \
  -v reader="${DB_READER:-threadline_reader}" -v reader_password="${DB_READER_PASSWORD:?DB_READER_PASSWORD is not set}" \
  -v keystore="${DB_KEYSTORE:-threadline_keystore}" -v keystore_password="${DB_KEYSTORE_PASSWORD:?DB_KEYSTORE_PASSWORD is not set}" \
  <<'SQL' || exit 1
create role :"owner" login nosuperuser nocreatedb nocreaterole password :'owner_password';
create role :"reader" login nosuperuser nocreatedb nocreaterole password :'reader_password';
create role :"keystore" login nosuperuser nocreatedb nocreaterole noinherit password :'keystore_password';
alter database :"db" owner to :"owner";
revoke create on schema public from public;
revoke all on database :"db" from public;
grant connect, temporary on database :"db" to :"owner";
grant connect on database :"db" to :"reader";
grant connect on database :"db" to :"keystore";
alter default privileges for role :"owner" grant usage on schemas to :"reader";
alter default privileges for role :"owner" grant select on tables to :"reader";
grant usage on schema public to :"reader";
create schema privacy authorization :"owner";
revoke all on schema privacy from :"reader";
grant usage on schema privacy to :"keystore";
alter default privileges for role :"owner" in schema privacy grant select, insert on tables to :"keystore";
SQL
