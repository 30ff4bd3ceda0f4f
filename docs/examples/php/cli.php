<?php
// A command line over herald.php, for trying it out and for the test suite:
//
//   php cli.php token <siteKey> <secret> <userId> <ttl> [channel,channel...]   prints a token
//   php cli.php publish <baseUrl> <siteKey> <secret> <channel> <json> [key]     prints Herald's answer
//   php cli.php sign-channel <secret> <connectionId> <channel>                  prints the signature
//
// Exits 64 on a usage error and 1 when a publish gets no JSON answer.

require __DIR__ . '/herald.php';

function usage(): void {
    fwrite(STDERR, "usage: php cli.php token SITE_KEY SECRET USER_ID TTL [CHANNELS]\n"
        . "       php cli.php publish BASE_URL SITE_KEY SECRET CHANNEL JSON [IDEMPOTENCY_KEY]\n"
        . "       php cli.php sign-channel SECRET CONNECTION_ID CHANNEL\n");
    exit(64);
}

$args = array_slice($argv, 1);
$command = array_shift($args);

switch ($command) {
    case 'token':
        if (count($args) < 4 || count($args) > 5) { usage(); }
        $channels = isset($args[4]) && $args[4] !== '' ? explode(',', $args[4]) : [];
        echo herald_token($args[0], $args[1], $args[2], (int) $args[3], $channels), "\n";
        break;
    case 'publish':
        if (count($args) < 5 || count($args) > 6) { usage(); }
        $data = json_decode($args[4], true);
        if ($data === null && json_last_error() !== JSON_ERROR_NONE) {
            fwrite(STDERR, "publish: the data is not JSON: " . json_last_error_msg() . "\n");
            exit(64);
        }
        $answer = herald_publish($args[0], $args[1], $args[2], $args[3], $data, $args[5] ?? '');
        if (!is_array($answer)) {
            fwrite(STDERR, "publish: Herald's answer is not JSON\n");
            exit(1);
        }
        echo json_encode($answer), "\n";
        break;
    case 'sign-channel':
        if (count($args) !== 3) { usage(); }
        echo herald_channel_signature($args[0], $args[1], $args[2]), "\n";
        break;
    default:
        usage();
}
