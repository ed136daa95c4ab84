import psycopg


def test_fresh_database_round_trip(postgres_url):
    with psycopg.connect(postgres_url) as conn:
        conn.execute("CREATE TABLE items (id serial PRIMARY KEY, name text NOT NULL)")
        conn.execute("INSERT INTO items (name) VALUES (%s), (%s)", ("a", "b"))
        conn.commit()
    with psycopg.connect(postgres_url) as conn:
        rows = conn.execute("SELECT name FROM items ORDER BY id").fetchall()
    assert rows == [("a",), ("b",)]


def test_new_databases_are_isolated(postgres_server):
    first, second = postgres_server.new_database(), postgres_server.new_database()
    assert first != second
    with psycopg.connect(first) as conn:
        conn.execute("CREATE TABLE only_here (x int)")
        conn.execute("INSERT INTO only_here VALUES (1)")
        conn.commit()
    with psycopg.connect(second) as conn:
        found = conn.execute("SELECT to_regclass('only_here')").fetchone()[0]
    assert found is None
