<?php
// Herald's client tokens, private-channel signatures and signed publishes, with nothing beyond
// PHP's standard library. These are the functions of docs/security.md, verbatim; the test suite
// (tests/tests/e2e/sites/php.rs) runs them against a live Herald through cli.php.

function herald_b64url(string $bytes): string {
    return rtrim(strtr(base64_encode($bytes), '+/', '-_'), '=');
}

// A client token for $userId, valid for $ttl seconds.
function herald_token(string $siteKey, string $secret, string $userId, int $ttl = 3600, array $channels = []): string {
    $header = ['alg' => 'HS256', 'typ' => 'JWT', 'kid' => $siteKey];
    $claims = ['sub' => $userId, 'exp' => time() + $ttl];
    if ($channels) { $claims['channels'] = $channels; }
    $signing = herald_b64url(json_encode($header)) . '.' . herald_b64url(json_encode($claims));
    return $signing . '.' . herald_b64url(hash_hmac('sha256', $signing, $secret, true));
}

// The signature a client sends to subscribe to a private- channel.
function herald_channel_signature(string $secret, string $connectionId, string $channel): string {
    return hash_hmac('sha256', $connectionId . ':' . $channel, $secret);
}

// Publishes $data (any JSON value) to $channel with a signed request; with $idempotencyKey
// (1-128 visible ASCII characters), a retry of the same publish is not published twice.
function herald_publish(string $baseUrl, string $siteKey, string $secret, string $channel, $data, string $idempotencyKey = ''): array {
    $body = json_encode(['channel' => $channel, 'data' => $data]);
    $ts = (string) time();
    $sig = hash_hmac('sha256', "POST\n/api/publish\n$ts\n$idempotencyKey\n$body", $secret);
    $headers = "Content-Type: application/json\r\nX-Herald-Key: $siteKey\r\n"
             . "X-Herald-Timestamp: $ts\r\nX-Herald-Signature: $sig\r\n";
    if ($idempotencyKey !== '') { $headers .= "Idempotency-Key: $idempotencyKey\r\n"; }
    $ctx = stream_context_create(['http' => [
        'method' => 'POST', 'ignore_errors' => true, 'content' => $body, 'header' => $headers,
    ]]);
    return json_decode(file_get_contents("$baseUrl/api/publish", false, $ctx), true);
}

// The timeline shard of $userId (docs/timelines.md): crc32("<site id>:<user id>") % timeline.shards.
// Put it in the page's Herald URL as `shard` (/ws?key=...&shard=...&token=...) so that
// deploy/nginx/herald.conf sends every user of a shard to the same node; Herald ignores it.
// crc32() is unsigned on 64-bit PHP, as the CRC-32 Herald computes.
function herald_shard(string $siteId, string $userId, int $shards = 1024): int {
    return crc32("$siteId:$userId") % $shards;
}
