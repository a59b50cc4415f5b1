-- Records of the service's smaller kinds (thing types, job templates): a JSON body by kind and
-- name, listed in name order (the byte order bbolt keeps).
CREATE TABLE records (
    kind text NOT NULL,
    name text COLLATE "C" NOT NULL,
    body jsonb NOT NULL,
    PRIMARY KEY (kind, name)
);

-- IDs of records (a thing type's thingTypeId).
CREATE SEQUENCE record_ids;
