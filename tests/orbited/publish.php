<?php
// Publishes one notice to Herald's STOMP port the way StatusNet's Orbited plugin
// (plugins/Orbited/OrbitedPlugin.php) does through the STOMP client StatusNet bundles
// (extlib/Stomp.php), on the wire as shared/reference/protocols.md §4 records it: a TCP
// connection per notice; `CONNECT` with `login: ` and `passcode: ` headers (a space after each
// colon); the reply read until a NUL followed by a LF; one `SEND` per timeline with
// `destination: /<channelbase>/<path>` and the notice's json_encode as the body; `DISCONNECT`.
// Every frame is the command, `name: value` lines, a blank line, the body, then NUL and LF.
//
// Usage: php publish.php HOST PORT LOGIN PASSCODE CHANNELBASE RECEIPTS PATH [PATH...]
//   CHANNELBASE may be '' (none); RECEIPTS is 1 to ask a receipt of each SEND and wait for it;
//   a PATH is a timeline path with '/' between its parts: all/evan
// Prints the notice's JSON on the first line, then the reply to CONNECT (its command), then for
// each PATH the destination and, with RECEIPTS, the receipt's command and id. An ERROR frame is
// printed as `ERROR <message>` and ends the script with status 3.

function write_frame($socket, $command, array $headers, $body = '')
{
    $data = $command . "\n";
    foreach ($headers as $name => $value) {
        $data .= $name . ": " . $value . "\n";
    }
    $data .= "\n" . $body . "\x00\n";
    fwrite($socket, $data);
}

function read_frame($socket)
{
    $data = '';
    while (substr($data, -2) !== "\x00\n") {
        $chunk = fread($socket, 1);
        if ($chunk === false || $chunk === '') {
            if (feof($socket)) {
                return null;
            }
            continue;
        }
        $data .= $chunk;
    }
    [$head, $body] = explode("\n\n", substr($data, 0, -2), 2) + [1 => ''];
    $lines = explode("\n", ltrim($head, "\n"));
    $command = array_shift($lines);
    $headers = [];
    foreach ($lines as $line) {
        [$name, $value] = explode(':', $line, 2) + [1 => ''];
        $headers[$name] = ltrim($value);
    }
    return ['command' => $command, 'headers' => $headers, 'body' => $body];
}

function expect($frame, $command)
{
    if ($frame === null) {
        echo "CLOSED\n";
        exit(3);
    }
    if ($frame['command'] === 'ERROR') {
        echo 'ERROR ', $frame['headers']['message'] ?? '', "\n";
        exit(3);
    }
    if ($frame['command'] !== $command) {
        echo 'UNEXPECTED ', $frame['command'], "\n";
        exit(4);
    }
    return $frame;
}

if ($argc < 8) {
    fwrite(STDERR, "usage: php publish.php HOST PORT LOGIN PASSCODE CHANNELBASE RECEIPTS PATH [PATH...]\n");
    exit(2);
}
[, $host, $port, $login, $passcode, $channelbase, $receipts] = $argv;
$paths = array_slice($argv, 7);

// The notice's id is 124, or NOTICE_ID from the environment.
$notice = [
    'text' => "It's a \"quoted\" notice with a back\\slash, caf\u{e9} and \u{1f600} #rust",
    'id' => (int) (getenv('NOTICE_ID') ?: 124),
    'source' => 'web',
    'user' => ['id' => 1, 'screen_name' => 'evan', 'profile_url' => 'http://example.net/evan'],
    'html' => htmlspecialchars('<p>It\'s a "quoted" notice</p>'),
    'url' => 'http://example.net/notice/124',
];
$json = json_encode($notice);
echo $json, "\n";

$socket = stream_socket_client("tcp://{$host}:{$port}", $errno, $errstr, 5);
if (!$socket) {
    fwrite(STDERR, "cannot connect: $errstr\n");
    exit(1);
}
write_frame($socket, 'CONNECT', ['login' => $login, 'passcode' => $passcode]);
$connected = expect(read_frame($socket), 'CONNECTED');
echo $connected['command'], "\n";
foreach ($paths as $path) {
    $parts = explode('/', $path);
    if ($channelbase !== '') {
        array_unshift($parts, $channelbase);
    }
    $destination = '/' . implode('/', $parts);
    $headers = ['destination' => $destination];
    if ($receipts === '1') {
        $headers['receipt'] = "r-$path";
    }
    write_frame($socket, 'SEND', $headers, $json);
    echo $destination;
    if ($receipts === '1') {
        $receipt = expect(read_frame($socket), 'RECEIPT');
        echo "\t", $receipt['command'], "\t", $receipt['headers']['receipt-id'];
    }
    echo "\n";
}
write_frame($socket, 'DISCONNECT', []);
fclose($socket);
