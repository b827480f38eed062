// Driver for the vendor's published AuthHeaderHelper (AuthHeaderHelper.cs,
// kept verbatim beside this file). Prints one ARMOR-PSK Authorization value
// and nothing else, so a test can hand it to curl.
//
//   mono driver.exe [keyId [secretKey [requestPath [httpMethod [requestBody]]]]]
//
// Each value missing from the command line is read from the environment:
// ARMOR_KEY_ID, ARMOR_SECRET_KEY, ARMOR_REQUEST_PATH, ARMOR_REQUEST_METHOD
// (default GET) and ARMOR_REQUEST_BODY (default empty). Prefer the
// environment for the secret: a command line is visible to other users.
//
// Build: mcs -out:driver.exe AuthHeaderHelper.cs Driver.cs
using System;

public static class Driver
{
    static string Pick(string[] args, int index, string envName, string fallback)
    {
        if (args.Length > index)
        {
            return args[index];
        }
        var value = Environment.GetEnvironmentVariable(envName);
        return string.IsNullOrEmpty(value) ? fallback : value;
    }

    public static int Main(string[] args)
    {
        if (args.Length > 5 || (args.Length > 0 && (args[0] == "-h" || args[0] == "--help")))
        {
            Console.Error.WriteLine("usage: driver.exe [keyId [secretKey [requestPath [httpMethod [requestBody]]]]]");
            Console.Error.WriteLine("missing values come from ARMOR_KEY_ID, ARMOR_SECRET_KEY, ARMOR_REQUEST_PATH,");
            Console.Error.WriteLine("ARMOR_REQUEST_METHOD (default GET) and ARMOR_REQUEST_BODY (default empty)");
            return 2;
        }
        var keyId = Pick(args, 0, "ARMOR_KEY_ID", null);
        var secret = Pick(args, 1, "ARMOR_SECRET_KEY", null);
        var path = Pick(args, 2, "ARMOR_REQUEST_PATH", null);
        var method = Pick(args, 3, "ARMOR_REQUEST_METHOD", "GET");
        var body = Pick(args, 4, "ARMOR_REQUEST_BODY", "");
        if (string.IsNullOrEmpty(keyId) || string.IsNullOrEmpty(secret) || string.IsNullOrEmpty(path))
        {
            Console.Error.WriteLine("driver: need a key id (ARMOR_KEY_ID), a secret key (ARMOR_SECRET_KEY) and a request path (ARMOR_REQUEST_PATH)");
            return 2;
        }
        // The helper is called exactly as the vendor's page shows it.
        Console.WriteLine(AuthHeaderHelper.CreateAuthorizationHeader(keyId, secret, path, body, method));
        return 0;
    }
}
