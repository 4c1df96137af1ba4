// The settings in force. One mutable object for the whole process: RELOAD and SET update it in
// place, so every module reads the current value through the same reference.
import { defaultSettings, type Settings } from './settings.js';

export const cf: Settings = defaultSettings();

/** Replace every setting with the values of `next` (after a successful load). */
export function installSettings(next: Settings): void {
  Object.assign(cf, next);
}
