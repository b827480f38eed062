package armorpsk

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// DefaultProfile is the profile used when none is named.
const DefaultProfile = "default"

// CredentialsPath is where the credentials file is: $ARMOR_CREDENTIALS_FILE,
// else $HOME/.config/armor/credentials.
func CredentialsPath() (string, error) {
	if p := os.Getenv("ARMOR_CREDENTIALS_FILE"); p != "" {
		return p, nil
	}
	home := os.Getenv("HOME")
	if home == "" {
		home = os.Getenv("USERPROFILE")
	}
	if home == "" {
		return "", errorf("cannot locate the credentials file: set HOME or ARMOR_CREDENTIALS_FILE")
	}
	return filepath.Join(home, ".config", "armor", "credentials"), nil
}

// ParseProfiles parses the credentials file's text into profile name ->
// lowercased key -> value. Blank lines and lines starting with '#' or ';'
// are ignored, "[name]" opens a profile, every other line is "key = value"
// split at the first '='. A repeated profile or key is an error. Errors
// give the line number, never the line (it may hold a secret).
func ParseProfiles(text string) (map[string]map[string]string, error) {
	profiles := map[string]map[string]string{}
	headers := map[string]int{}
	keyLines := map[string]int{}
	current := ""
	for i, raw := range strings.Split(text, "\n") {
		n := i + 1
		line := strings.TrimSpace(raw)
		if line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";") {
			continue
		}
		if strings.HasPrefix(line, "[") {
			name := ""
			if strings.HasSuffix(line, "]") && len(line) >= 2 {
				name = strings.TrimSpace(line[1 : len(line)-1])
			}
			if name == "" {
				return nil, errorf("line %d: a section header is `[profile-name]`", n)
			}
			if prev, ok := headers[name]; ok {
				return nil, errorf("line %d: profile [%s] already started on line %d", n, name, prev)
			}
			headers[name] = n
			profiles[name] = map[string]string{}
			current = name
			continue
		}
		eq := strings.IndexByte(line, '=')
		if eq < 0 {
			return nil, errorf("line %d: expected `[profile]`, `key = value` or a `#` comment", n)
		}
		key := strings.ToLower(strings.TrimSpace(line[:eq]))
		if key == "" {
			return nil, errorf("line %d: missing key before `=`", n)
		}
		if current == "" {
			return nil, errorf("line %d: `%s = ...` comes before any `[profile]` header", n, key)
		}
		if prev, ok := keyLines[current+"\x00"+key]; ok {
			return nil, errorf("line %d: `%s` already set on line %d of profile [%s]", n, key, prev, current)
		}
		keyLines[current+"\x00"+key] = n
		profiles[current][key] = strings.TrimSpace(line[eq+1:])
	}
	return profiles, nil
}

// LoadCredentials finds a key id and secret as the armor command line does:
// ARMOR_KEY_ID and ARMOR_SECRET_KEY, then, for whatever is missing, the
// profile of the credentials file named by profile (else ARMOR_PROFILE,
// else "default"). The error says what is missing and where it looked.
func LoadCredentials(profile string) (keyID, secret string, err error) {
	if profile == "" {
		profile = os.Getenv("ARMOR_PROFILE")
	}
	if profile == "" {
		profile = DefaultProfile
	}
	keyID, secret = os.Getenv("ARMOR_KEY_ID"), os.Getenv("ARMOR_SECRET_KEY")
	if keyID != "" && secret != "" {
		return keyID, secret, nil
	}
	path, err := CredentialsPath()
	if err != nil {
		return "", "", err
	}
	var why string
	var values map[string]string
	data, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		why = "no credentials file at " + path
	case err != nil:
		return "", "", errorf("cannot read %s: %v", path, errors.Unwrap(err))
	default:
		if info, statErr := os.Stat(path); statErr == nil && info.Mode().Perm()&0o077 != 0 {
			fmt.Fprintf(os.Stderr, "armorpsk: warning: %s is accessible to group or others (mode %04o); run `chmod 600 %s`\n",
				path, info.Mode().Perm(), path)
		}
		profiles, perr := ParseProfiles(string(data))
		if perr != nil {
			return "", "", errorf("%s (in %s)", strings.TrimPrefix(perr.Error(), "armorpsk: "), path)
		}
		var ok bool
		if values, ok = profiles[profile]; !ok {
			why = fmt.Sprintf("no profile [%s] in %s", profile, path)
		}
	}
	var missing []string
	if keyID == "" {
		if keyID = values["key_id"]; keyID == "" {
			missing = append(missing, "key_id")
		}
	}
	if secret == "" {
		if secret = values["secret_key"]; secret == "" {
			missing = append(missing, "secret_key")
		}
	}
	if len(missing) == 0 {
		return keyID, secret, nil
	}
	if values != nil {
		why = fmt.Sprintf("profile [%s] in %s has no %s", profile, path, strings.Join(missing, " or "))
	}
	what := "no credentials"
	if len(missing) == 1 && missing[0] == "key_id" {
		what = "no key id"
	} else if len(missing) == 1 {
		what = "no secret key"
	}
	return "", "", errorf("%s: set ARMOR_KEY_ID and ARMOR_SECRET_KEY or run `armor configure --profile %s` (%s)",
		what, profile, why)
}
